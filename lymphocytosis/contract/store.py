"""The embeddings file: one HDF5 per extraction, with its provenance; read by stage 2 without torch.

Layout (format `lymphocytosis-embeddings/2`):

    /                         attrs: provenance (see provenance.PROVENANCE_KEYS), weights_file_sha256, versions, created,
                                     dataset_root, n_patients, n_images, n_skipped, dim (D; absent in files
                                     written before it was recorded), complete=True
    /patients/<ID>/embeddings float (n_cells, D), rows in the order of `filenames`; (0, D) for a patient without cells
    /patients/<ID>/filenames  utf-8 strings (n_cells,), image names inside the patient's folder
    /patients/<ID>            attrs: split, n_cells, skipped (JSON list of {"file", "reason"}), note,
                                     listing_sha256 (the folder's image listing), row_sha256 (its CSV row),
                                     content_sha256 (digest of the bag and its settings: integrity.py)

Everything read is checked before use (structure, types, shapes, finite and plausible values, plain file
names): a damaged or tampered file stops with one line naming the file and patient.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError, in_file
from ..invocation import command
from .integrity import DIGEST_ATTR, bag_digest, declared_problem, digest_problem, has_digest, link_problem
from .layout import SPLIT_CSVS, validate_patient_id
from .provenance import PROVENANCE_KEYS

log = logging.getLogger(__name__)

FORMAT = "lymphocytosis-embeddings/2"
OLD_FORMATS = ("lymphocytosis-embeddings/1",)  # recognised (to be updated or replaced), never read
KNOWN_FORMATS = (FORMAT, *OLD_FORMATS)
MAX_ABS_VALUE = 1e5  # no frozen network's pooled feature comes near this; 1e30 means a damaged file
_STR = h5py.string_dtype("utf-8")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@dataclass
class PatientBag:
    """One patient's embeddings, in image order, and what could not be embedded."""

    patient_id: str
    split: str
    embeddings: np.ndarray  # (n_cells, D)
    filenames: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    note: str = ""  # e.g. "folder missing"
    listing_sha256: str = ""  # fingerprint of the folder's image files when embedded (images.scan_folder)
    row_sha256: str = ""  # fingerprint of the patient's CSV row (layout.row_fingerprint)


def write_bag(group: h5py.Group, bag: PatientBag, dim: int, dtype: str, provenance: dict | None = None) -> None:
    """One patient's group; with `provenance` (the final file), the bag's digest too (see integrity.py)."""
    embeddings = np.asarray(bag.embeddings, dtype=dtype).reshape(-1, dim)
    group.create_dataset("embeddings", data=embeddings)
    if provenance is not None:
        group.attrs[DIGEST_ATTR] = bag_digest(provenance, bag.patient_id, embeddings, list(bag.filenames))
    group.create_dataset("filenames", data=np.array(bag.filenames, dtype=object), dtype=_STR)
    for key in ("split", "note", "listing_sha256", "row_sha256"):
        group.attrs[key] = getattr(bag, key)
    group.attrs["n_cells"] = len(bag.filenames)
    group.attrs["skipped"] = json.dumps(bag.skipped)


def plain_name(name: str) -> bool:
    """A file name that stays inside its folder: no separator, no `..`, nothing absolute or empty."""
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\0" not in name


def is_measurement(provenance: dict) -> bool:
    """A measurement file (extract.py --measure): named quantities per cell, NaN where one could not be measured."""
    return str(provenance.get("weights_source", "")).startswith("measurement:")


def check_embeddings(values: np.ndarray, n_files: int, measured: bool = False) -> str | None:
    if values.ndim != 2 or values.shape[0] != n_files or values.shape[1] < 1:
        return f"embeddings of shape {values.shape} for {n_files} file names"
    if values.dtype.kind != "f":
        return f"embeddings of type {values.dtype}, not floating point"
    if np.isinf(values).any() or (not measured and np.isnan(values).any()):
        return "embeddings hold NaN or infinite values"
    largest = float(np.nanmax(np.abs(values))) if values.size and not np.isnan(values).all() else 0.0
    if largest > MAX_ABS_VALUE:
        return f"embeddings hold values up to {largest:.3g} (expected |x| < {MAX_ABS_VALUE:g})"
    return None


def check_attrs(attrs: dict) -> str | None:
    if attrs["split"] not in SPLIT_CSVS:
        return f"split {attrs['split']!r} is not one of {', '.join(SPLIT_CSVS)}"
    for key in ("listing_sha256", "row_sha256"):
        if not _HEX64.match(attrs[key]):
            return f"{key} {attrs[key]!r} is not a SHA-256"
    skipped = attrs["skipped"]
    if not (isinstance(skipped, list) and all(isinstance(s, dict) and isinstance(s.get("file"), str)
                                              and isinstance(s.get("reason"), str) for s in skipped)):
        return "the list of skipped images is malformed"
    return None


def read_bag(group: h5py.Group, patient_id: str, measured: bool = False, provenance: dict | None = None,
             file_size: int | None = None) -> PatientBag:
    """One patient's group, checked; ValueError names what is wrong. With `provenance` and `file_size` (a final
    file), its layout is checked before any array is read, and its content against its digest after."""
    validate_patient_id(patient_id, "patient group")
    if provenance is not None:
        problem = declared_problem(group, provenance, file_size or 0)
        if problem:
            raise ValueError(problem)
    names = [s.decode() if isinstance(s, bytes) else str(s) for s in group["filenames"][()]]
    embeddings = group["embeddings"][()]
    attrs = {key: str(group.attrs[key]) for key in ("split", "note", "listing_sha256", "row_sha256")}
    attrs["skipped"] = json.loads(group.attrs["skipped"])
    problem = check_embeddings(embeddings, len(names), measured) or check_attrs(attrs)
    bad_names = [n for n in names if not plain_name(n)]
    if bad_names:
        problem = f"file name {bad_names[0]!r} is not a plain name inside the patient's folder"
    elif len(set(names)) != len(names):
        problem = "a file name is listed twice"
    if not problem and provenance is not None:
        problem = digest_problem(group, provenance, patient_id, embeddings, names)
    if problem:
        raise ValueError(problem)
    return PatientBag(patient_id, attrs["split"], embeddings, names, attrs["skipped"], attrs["note"],
                      attrs["listing_sha256"], attrs["row_sha256"])


def write_file_attrs(handle: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        handle.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses (TorchVersion)
    handle.attrs["format"] = FORMAT
    handle.attrs["complete"] = True


def views_path(embeddings: Path) -> Path:
    """Where extract.py writes the training views of the cells of `embeddings` (augmentation.py) and where stage 2
    looks for them: beside it, `<name>.views.h5`. A file of the same format, one row per cell as the embeddings."""
    embeddings = Path(embeddings)
    return embeddings.with_name(embeddings.name.removesuffix(".h5") + ".views.h5")


def read_attrs(path: Path) -> dict:
    """The file's attributes, whatever its state (used to recognise our own files before replacing them)."""
    with h5py.File(path, "r") as handle:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}


def patients_without_cells(path: Path) -> list[str]:
    """The patients of a finished file with no cell at all (no folder, an empty one, or every image skipped)."""
    with h5py.File(path, "r") as handle:
        return [patient_id for patient_id, group in handle.get("patients", {}).items()
                if int(group.attrs.get("n_cells", 0)) == 0]


def read_provenance(path: Path) -> dict:
    """The file's attributes, after checking it is a complete embeddings file of this format."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found (run `{command('extract')}` first)")
    try:
        attrs = read_attrs(path)
    except HDF5_ERRORS as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    if attrs.get("format") in OLD_FORMATS:
        raise InputError(f"{path}: made by an older version of this tool; rerun `{command('extract')}` with the same settings "
                         "and --overwrite to update it")
    if attrs.get("format") != FORMAT:
        raise InputError(f"{path}: not an embeddings file of this tool (format {attrs.get('format')!r})")
    if attrs.get("complete") is not True:
        raise InputError(f"{path}: incomplete embeddings file; rerun `{command('extract')}` to finish it")
    wrong = [k for k in (*PROVENANCE_KEYS, "dataset_root") if not isinstance(attrs.get(k), str)]
    if wrong:
        raise InputError(f"{path}: damaged provenance (attribute {wrong[0]} missing or not text); re-extract it")
    return attrs


def patient_groups(handle: h5py.File):
    """Each patient's (ID, group), in file order, followed only through hard links inside the file (an external
    link would read another file, a soft link another patient's bag): InputError otherwise."""
    problem = link_problem(handle, "patients")
    if problem:
        raise InputError(problem)
    patients = handle["patients"]
    for patient_id in patients:
        problem = link_problem(patients, patient_id)
        if problem:
            raise InputError(f"patient {patient_id}: group {problem}")
        yield patient_id, patients[patient_id]


def load_bags(path: Path) -> tuple[dict, dict[str, PatientBag]]:
    """Provenance and every patient's bag, read once and checked (one dimension for all patients; links, layout
    and sizes before any array is read, digests after: see integrity.py)."""
    provenance = read_provenance(path)
    bags: dict[str, PatientBag] = {}
    patient_id = None
    undigested = 0
    try:
        file_size = Path(path).stat().st_size
        with h5py.File(path, "r") as handle:
            for patient_id, group in patient_groups(handle):
                undigested += not has_digest(group)
                bags[patient_id] = read_bag(group, patient_id, is_measurement(provenance), provenance, file_size)
    except InputError as exc:
        raise in_file(path, exc) from None
    except (*HDF5_ERRORS, json.JSONDecodeError) as exc:
        where = f"patient {patient_id}: " if patient_id else ""
        raise InputError(f"{path}: {where}damaged embeddings ({str(exc).splitlines()[0]}); re-extract it") from None
    if not bags:
        raise InputError(f"{path}: holds no patients")
    if undigested:
        log.warning("%s: %d of %d patients' embeddings carry no digest (written before digests were recorded), so "
                    "their content cannot be verified; rerun extract.py with the same settings to add them (nothing "
                    "is embedded again)", path, undigested, len(bags))
    problem = check_dimensions(provenance, bags)
    if problem:
        raise InputError(f"{path}: {problem}; re-extract it")
    return provenance, bags


def check_dimensions(provenance: dict, bags: dict[str, PatientBag]) -> str | None:
    """Every bag, an empty one too (shape (0, D)), has the dimension the file records (`dim`, written since it
    was added) or, in a file without it, the one most bags have."""
    recorded = provenance.get("dim")
    if "dim" in provenance and (type(recorded) is not int or recorded < 1):
        return f"attribute dim = {recorded!r:.40} is not a positive integer"
    dims = [bag.embeddings.shape[1] for bag in bags.values()]
    expected = recorded if "dim" in provenance else max(set(dims), key=dims.count)
    odd = next((bag for bag in bags.values() if bag.embeddings.shape[1] != expected), None)
    if odd is None:
        return None
    what = "the file records" if "dim" in provenance else "the other patients' have"
    return (f"patient {odd.patient_id}: embeddings of shape {odd.embeddings.shape}, {odd.embeddings.shape[1]} dimensions "
            f"where {what} {expected}")
