"""The patients a model sees: the clinical table and one or more per-cell feature sets (an embeddings file per
backbone), loaded once per process and checked to agree patient by patient."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..contract.provenance import TRAINING_VIEW, identity, require_same
from ..contract.store import is_measurement, load_bags, views_path
from ..errors import InputError
from ..evidence import reason_without_cells, warn_without_cells, without_cells
from ..files import same_file
from ..invocation import command
from .cell_score import CellStatistics, Views
from .clinical import read_clinical

log = logging.getLogger(__name__)


@dataclass
class CellFeatureSet:
    """One embeddings file: a (n_cells, D) float32 matrix per patient, rows in image-file order."""

    name: str  # short label used in feature columns and reports (the backbone, unless two files share it)
    path: Path
    provenance: dict
    bags: dict[str, np.ndarray]
    filenames: dict[str, list[str]]
    records: dict[str, list[str]] = field(default_factory=dict)  # patient -> [listing_sha256, row_sha256], as extracted
    empty_reasons: dict[str, str] = field(default_factory=dict)  # patient without cells -> why (see evidence.py)
    # The training views beside the file (store.views_path; augmentation.py): patient -> [one (n_cells, D) array
    # per view], rows paired with `bags`; None when there are none.
    views: dict[str, list[np.ndarray]] | None = None
    views_recipe: str | None = None  # how they were made (augmentation.recipe, their provenance's TRAINING_VIEW)
    warned_without_views: bool = field(default=False, repr=False)  # said once per process (features.py)
    _statistics: dict[float, CellStatistics] = field(default_factory=dict, repr=False)
    _raw: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return next(iter(self.bags.values())).shape[1]

    @property
    def measured(self) -> bool:
        """A measurement file (named quantities per cell, see measurements.py), not embeddings."""
        return is_measurement(self.provenance)

    def invariance(self, weight: float) -> float:
        """The invariance penalty's weight a fit on this file gets: `weight`, or 0 without training views."""
        return float(weight) if self.views is not None else 0.0

    def statistics(self, ids: list[str], invariance: float = 0.0) -> CellStatistics:
        """Per-patient sufficient statistics of the cell score's ridge, with the invariance penalty of this weight
        (when the file has training views), computed once (for `ids`: the labelled patients, the only ones ever
        fitted on): folds fitted in other threads meanwhile wait for it."""
        weight = self.invariance(invariance)
        with self._lock:
            if weight not in self._statistics:
                views = Views({p: self.views[p] for p in ids}, weight) if self.views is not None else None
                self._statistics[weight] = CellStatistics({patient_id: self.bags[patient_id] for patient_id in ids},
                                                          views=views)
            return self._statistics[weight]

    def has_statistics(self, invariance: float = 0.0) -> bool:
        """Whether `statistics` of this weight are computed already."""
        return self.invariance(invariance) in self._statistics

    def raw_statistics(self, patient_id: str, stats: tuple[str, ...], compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Statistics of the raw dimensions learn nothing from labels: computed once per patient and process."""
        key = (patient_id, stats)
        if key not in self._raw:
            self._raw[key] = compute(self.bags[patient_id])
        return self._raw[key]


def patients_fingerprint(ids: list[str], labels) -> str:
    """Which patients, with which labels (order aside): what tuned settings and saved results are tied to."""
    pairs = sorted(zip(ids, (int(label) for label in labels)))
    text = ",".join(f"{patient_id}:{label}" for patient_id, label in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class FitMemo:
    """Learned parts depend on the training patients and their own settings only, not on LightGBM's parameters:
    tuning trials that revisit the same folds reuse them. Bounded in entries and, for entries that say their
    size (`nbytes`), in bytes: least recently used first out.

    Safe to share between threads (folds computed at once, threads.py): the bookkeeping is locked, the
    computing is not, so a value two threads both miss is computed twice -- the same value, kept once."""

    def __init__(self, capacity: int = 2048, max_bytes: int | None = None):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.RLock()

    def get(self, key, compute: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        size = int(getattr(value, "nbytes", 0) or 0)
        if self.max_bytes is not None and size > self.max_bytes:
            return value  # larger than the whole budget: computed, not kept
        with self._lock:
            if key in self._items:  # computed meanwhile by another thread: the same value, keep the first
                self._items.move_to_end(key)
                return self._items[key]
            self._items[key], self._sizes[key] = value, size
            while len(self._items) > self.capacity or (self.max_bytes is not None and self.nbytes > self.max_bytes):
                oldest, _ = self._items.popitem(last=False)
                del self._sizes[oldest]
        return value

    def get_for(self, owner, key, compute: Callable):
        """`compute()` for an object without a value-based key (a fitted basis or weights): remembered under the
        object's identity, and kept beside the value so that identity is never another object's."""
        stored = self.get((id(owner), *key), lambda: (owner, compute()))
        if stored[0] is owner:
            return stored[1]
        value = compute()
        with self._lock:
            self._items[(id(owner), *key)] = (owner, value)
        return value

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())


# The cell score's ridge problems (CellStatistics, cross_fit_problems) kept while tuning, for reuse across
# trials' penalties: about 20 MB per fold for 1280-dimensional embeddings (6 packed float32 triangles), so 10 folds
# (tune.py's default 5 folds x 2 repeats) fit; beyond it the least recently used fold is recomputed when needed.
RIDGE_MEMO_BYTES = 256 * 2**20


@dataclass
class Cohort:
    clinical: pd.DataFrame  # indexed by patient ID: label (-1 unknown), split, clinical features
    sets: list[CellFeatureSet]  # one per embeddings file, in the order given
    dataset_root: Path
    memo: FitMemo = field(default_factory=FitMemo, repr=False)
    ridge_memo: FitMemo | None = field(default=None, repr=False)  # while tuning only: keeping_ridge_problems

    @contextlib.contextmanager
    def keeping_ridge_problems(self):
        """Keep the cell score's ridge problems (penalty aside) for the duration: tuning tries several penalties
        on the same folds and reuses them. Outside it, each CV fit is solved once where it is built, without
        storing 20 MB per fold that nothing would read again."""
        previous = self.ridge_memo
        self.ridge_memo = previous or FitMemo(max_bytes=RIDGE_MEMO_BYTES)
        try:
            yield
        finally:
            self.ridge_memo = previous

    @property
    def ids(self) -> list[str]:
        return list(self.clinical.index)

    @property
    def labelled_ids(self) -> list[str]:
        return list(self.clinical.index[self.clinical["label"] >= 0])

    @property
    def unlabelled_ids(self) -> list[str]:
        return list(self.clinical.index[self.clinical["label"] < 0])

    def labels(self, ids) -> np.ndarray:
        return self.clinical.loc[list(ids), "label"].to_numpy(dtype=int)

    @property
    def fingerprint(self) -> str:
        """Which labelled patients (and labels) this is: tuned settings and studies are tied to it."""
        return patients_fingerprint(self.labelled_ids, self.labels(self.labelled_ids))

    @property
    def data_fingerprint(self) -> str:
        """Which cells and CSV rows this is, for every embeddings file: results computed before images were
        added or replaced, or before a CSV row was corrected, are not results of these data."""
        content = {s.name: {p: [*s.records.get(p, []), len(s.filenames[p])] for p in self.ids} for s in self.sets}
        # Views are checked to be of these very images (load_views): their recipe is all they add.
        content.update({f"{name} views": recipe for name, recipe in self.training_views.items()})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def training_views(self) -> dict[str, str]:
        """Each embeddings file's training-views recipe, for those that have views: the cell score, and so every
        result fitted on it, differ with them."""
        return {s.name: s.views_recipe for s in self.sets if s.views is not None}

    def feature_set(self, name: str) -> CellFeatureSet:
        for feature_set in self.sets:
            if feature_set.name == name:
                return feature_set
        raise InputError(f"no embeddings of {name!r} given (given: {', '.join(s.name for s in self.sets)})")

    @property
    def provenance(self) -> dict[str, dict]:
        """Each feature set's identity (see provenance.identity), by name: what a model or study is tied to."""
        return {s.name: identity(s.provenance) for s in self.sets}

    @property
    def primary(self) -> CellFeatureSet:
        """The first embeddings file (measurement files only when there is none): its images and thumbnails are
        the ones shown."""
        return next((s for s in self.sets if not s.measured), self.sets[0])


def set_names(provenances: list[dict], paths: list[Path]) -> list[str]:
    """Each file's label: its backbone (the provenance's model), or where two files share one, `<backbone>@<file
    stem>`, then `<backbone>@<parent folder>` for files of the same name in two folders, then a counter. The same
    file given twice (under two names, or through a link) is refused: it would only duplicate features."""
    for i, path in enumerate(paths):
        twin = next((other for other in paths[:i] if same_file(path, other)), None)
        if twin is not None:
            raise InputError(f"{path}: given twice (the same file as {twin})")
    models = [str(p.get("model", "embeddings")) for p in provenances]
    levels = [lambda m, path: m, lambda m, path: f"{m}@{path.stem}",
              lambda m, path: f"{m}@{path.resolve().parent.name or path.stem}"]
    level = [0] * len(paths)
    names = [levels[0](m, path) for m, path in zip(models, paths)]
    while len(set(names)) != len(names):
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1]
        if all(level[i] == len(levels) - 1 for i in clashing):
            for count, i in enumerate(clashing[1:], 2):
                names[i] = unused(f"{names[i]}-{count}", names)
            break
        for i in clashing:
            level[i] = min(level[i] + 1, len(levels) - 1)
            names[i] = levels[level[i]](models[i], paths[i])
    return names


def unused(name: str, names: list[str]) -> str:
    """`name`, or `name` with a suffix, so that it is none of `names`."""
    candidate, k = name, 1
    while candidate in names:
        k += 1
        candidate = f"{name}.{k}"
    return candidate


def check_patients(path: Path, root: Path, clinical: pd.DataFrame, bags: dict) -> None:
    missing = [patient_id for patient_id in clinical.index if patient_id not in bags]
    if missing:
        raise InputError(f"{path}: no embeddings for patient {missing[0]} (of {len(missing)} listed in {root}'s CSVs); "
                         f"rerun `{command('extract')}` on this dataset")
    extra = [patient_id for patient_id in bags if patient_id not in clinical.index]
    if extra:
        raise InputError(f"{path}: patient {extra[0]} has embeddings but no row in {root}'s CSVs")


def check_same_rows(path: Path, root: Path, clinical: pd.DataFrame, bags: dict) -> None:
    """The CSVs read now must be those the embeddings were made beside: another dataset's or an edited CSV would
    pair one patient's cells with another's clinical values or label, silently."""
    moved = [p for p in clinical.index if bags[p].split != clinical.loc[p, "split"]]
    edited = [p for p in clinical.index if bags[p].row_sha256 != clinical.loc[p, "row_sha256"]]
    if moved:
        raise InputError(f"{root}: patients {', '.join(moved[:8])} are in another split than when {path} was made; rerun "
                         f"`{command('extract')} --root {root} --out {path}`: it records the new rows and embeds only "
                         "images that changed")
    if edited:
        raise InputError(f"{root}: the CSV rows of patients {', '.join(edited[:8])} ({len(edited)} of {len(clinical)}) "
                         f"differ from those {path} was made beside; is this the dataset it was extracted from? If the "
                         f"CSVs were corrected, rerun `{command('extract')} --root {root} --out {path}`: it records the "
                         "new rows and embeds only images that changed")


def check_same_cells(path: Path, primary: CellFeatureSet, bags: dict) -> None:
    """Several files' cell features are combined cell by cell: each must list the same images per patient."""
    for patient_id, names in primary.filenames.items():
        if bags[patient_id].filenames != names:
            raise InputError(f"{path}: patient {patient_id}'s images differ from those in {primary.path} "
                             f"({len(bags[patient_id].filenames)} vs {len(names)} files); extract both from the same dataset")


def refuse_all_empty(path: Path, root: Path, bags: dict) -> None:
    """No patient with a single cell is an error (the image folders are missing: a wrong or moved dataset), and a
    model "with images" would be the clinical one. Some patients without cells are the evidence rule's
    (evidence.py): said once, refused by the commands that would call them from nothing."""
    if bags and all(bag.embeddings.shape[0] == 0 for bag in bags.values()):
        raise InputError(f"{path}: none of the {len(bags)} patients has a cell image (are the image folders of {root} "
                         f"missing?); rerun `{command('extract')}` on a dataset with its images")


def load_views(feature_set: CellFeatureSet) -> None:
    """The training views extract.py writes beside an embeddings file, checked to be views of the same cells,
    made by the same network and preprocessing; none (an older or a --no-views extraction): the set has none."""
    path = views_path(feature_set.path)
    if feature_set.measured or not path.is_file():
        return
    provenance, bags = load_bags(path)
    remedy = (f"rerun `{command('extract')}` on the dataset without --no-views (it updates both files), or remove "
              f"{path.name}")
    if TRAINING_VIEW not in provenance:
        raise InputError(f"{path}: not a file of training views, though named like one; move it away")
    require_same({**feature_set.provenance, TRAINING_VIEW: provenance[TRAINING_VIEW]}, provenance,
                 f"{path}: training views not made like {feature_set.path}", remedy)
    for patient_id, names in feature_set.filenames.items():
        listing = feature_set.records.get(patient_id, [None])[0]
        if (patient_id not in bags or bags[patient_id].filenames != names
                or bags[patient_id].listing_sha256 != listing):  # same names, other images: views of the old ones
            raise InputError(f"{path}: patient {patient_id}'s views are not of the cells in {feature_set.path}; {remedy}")
    feature_set.views = {p: [bags[p].embeddings.astype(np.float32, copy=False)] for p in feature_set.filenames}
    feature_set.views_recipe = provenance[TRAINING_VIEW]
    log.info("%s: training views in %s (the cell score learns to ignore acquisition changes)", feature_set.path, path)


def load_cohort(embeddings: Path | list[Path], root: Path | None = None, views: bool = True) -> Cohort:
    """Embeddings file(s) plus the CSVs of the dataset they were extracted from (or `root`, when given), and the
    training views beside them unless `views` is False (commands that fit nothing never use them)."""
    paths = [Path(p) for p in (embeddings if isinstance(embeddings, (list, tuple)) else [embeddings])]
    loaded = [load_bags(path) for path in paths]
    root = Path(root) if root else Path(loaded[0][0].get("dataset_root", ""))
    clinical = read_clinical(root)
    sets = []
    for name, path, (provenance, bags) in zip(set_names([p for p, _ in loaded], paths), paths, loaded):
        if TRAINING_VIEW in provenance:
            raise InputError(f"{path}: a file of training views; give the embeddings file beside it instead")
        check_patients(path, root, clinical, bags)
        check_same_rows(path, root, clinical, bags)
        if sets:
            check_same_cells(path, sets[0], bags)
        if len(sets) == 0:
            refuse_all_empty(path, root, {p: bags[p] for p in clinical.index})
        sets.append(CellFeatureSet(
            name=name, path=path, provenance=provenance,
            bags={patient_id: bags[patient_id].embeddings.astype(np.float32, copy=False) for patient_id in clinical.index},
            filenames={patient_id: bags[patient_id].filenames for patient_id in clinical.index},
            records={patient_id: [bags[patient_id].listing_sha256, bags[patient_id].row_sha256]
                     for patient_id in clinical.index},
            empty_reasons={p: reason_without_cells(bags[p].note, bags[p].skipped) for p in clinical.index
                           if bags[p].embeddings.shape[0] == 0},
        ))
        if views:
            load_views(sets[-1])
    cohort = Cohort(clinical=clinical, sets=sets, dataset_root=root)
    warn_without_cells(without_cells(cohort, cohort.ids))
    return cohort
