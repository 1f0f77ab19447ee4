"""Content integrity of an embeddings file: what is checked before a patient's arrays are read, and after.

Before reading (so a hostile file cannot make the reader allocate what it declares):
- every object on the way to a bag is a hard link inside the file: HDF5 external links (to another file) and
  soft links (to another patient) are refused;
- each dataset is stored the way extract.py stores it (contiguous, uncompressed, not external or virtual), its
  declared size is what is actually allocated and fits in the file, and its shape and type agree with the
  provenance (the dimension the file records, the storage dtype) and with each other.

After reading: each patient's bag carries `content_sha256`, a SHA-256 of the settings that made it (the
provenance's identity), the patient ID, the file names and the embedding bytes, written at extraction. A bag
copied from a file of other settings (crop 96 under a provenance saying 112), from another patient, or edited,
no longer matches it. Files written before the digest existed are read with one warning; rerunning extract.py
with the same settings adds the digests without embedding again.
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

from .provenance import identity

DIGEST_ATTR = "content_sha256"
VLEN_ITEMSIZE = 16  # bytes HDF5 stores per variable-length string (a reference to its heap)
DTYPES = {"float32": np.dtype("float32"), "float16": np.dtype("float16")}


def bag_digest(provenance: dict, patient_id: str, embeddings: np.ndarray, filenames: list[str]) -> str:
    """SHA-256 of a bag as stored (little-endian bytes of the storage dtype), bound to its settings and patient."""
    values = np.ascontiguousarray(embeddings, dtype=embeddings.dtype.newbyteorder("<"))
    digest = hashlib.sha256()
    digest.update(json.dumps(identity(provenance), sort_keys=True).encode())
    digest.update(f"\0{patient_id}\0{values.dtype.str}\0{values.shape}\0".encode())
    digest.update("\0".join(filenames).encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(values.tobytes())
    return digest.hexdigest()


def link_problem(group: h5py.Group, name: str) -> str | None:
    """Why `group[name]` may not be followed, if so: only hard links inside the file are."""
    link = group.get(name, getlink=True)
    if link is None:
        return f"{name} is missing"
    if isinstance(link, h5py.ExternalLink):
        return f"{name} is an external link to {link.filename!r}; refused"
    if isinstance(link, h5py.SoftLink):
        return f"{name} is a soft link to {link.path!r}; refused"
    return None


def storage_problem(dataset: h5py.Dataset, file_size: int) -> str | None:
    """A dataset whose storage is not what extract.py writes, or whose declared size the file cannot hold."""
    name = dataset.name.rsplit("/", 1)[-1]
    if dataset.is_virtual or dataset.external:
        return f"{name} is stored outside the file (virtual or external storage); refused"
    if dataset.chunks is not None or dataset.compression is not None:
        return f"{name} is chunked or compressed, which this tool never writes"
    itemsize = VLEN_ITEMSIZE if dataset.dtype.kind == "O" else dataset.dtype.itemsize
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * itemsize
    if declared > file_size:
        return f"{name} declares {dataset.shape} values ({declared / 2**20:.1f} MiB), more than the whole file holds"
    if declared and dataset.id.get_storage_size() != declared:
        return f"{name} declares {declared} bytes but stores {dataset.id.get_storage_size()}"
    return None


def declared_problem(group: h5py.Group, provenance: dict, file_size: int) -> str | None:
    """Everything about a patient's group that can be checked without reading its arrays."""
    for name in ("embeddings", "filenames"):
        problem = link_problem(group, name)
        if problem:
            return problem
        if not isinstance(group[name], h5py.Dataset):
            return f"{name} is not a dataset"
        problem = storage_problem(group[name], file_size)
        if problem:
            return problem
    embeddings, filenames = group["embeddings"], group["filenames"]
    if embeddings.ndim != 2 or filenames.ndim != 1 or embeddings.shape[0] != filenames.shape[0]:
        return f"embeddings of shape {embeddings.shape} for {filenames.shape} file names"
    dim = provenance.get("dim")
    if type(dim) is int and embeddings.shape[1] != dim:
        return f"embeddings of shape {embeddings.shape}, {embeddings.shape[1]} dimensions where the file records {dim}"
    stored = DTYPES.get(str(provenance.get("dtype")))
    if stored is not None and embeddings.dtype.kind == "f" and embeddings.dtype != stored:
        return f"embeddings stored as {embeddings.dtype} where the provenance says {stored}"
    if h5py.check_string_dtype(filenames.dtype) is None:
        return "filenames are not strings"
    return None


def digest_problem(group: h5py.Group, provenance: dict, patient_id: str, embeddings: np.ndarray,
                   filenames: list[str]) -> str | None:
    """None when the bag matches its recorded digest (or records none: see `has_digest`)."""
    recorded = group.attrs.get(DIGEST_ATTR)
    if recorded is None:
        return None
    if bag_digest(provenance, patient_id, embeddings, filenames) != str(recorded):
        return ("content differs from the digest recorded at extraction (edited, or copied from another patient or "
                "from a file of other settings)")
    return None


def has_digest(group: h5py.Group) -> bool:
    return DIGEST_ATTR in group.attrs
