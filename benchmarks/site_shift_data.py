"""The site-shift benchmark's data: each acquisition change of the panel applied to every training image of a
dataset, written as a dataset of its own (same layout, same CSVs), then embedded with the project's own
extraction and the settings of the unchanged embeddings file. Both are cached under
artifacts/site_shift/<dataset>/: a rerun reuses what is there, an interrupted one resumes.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.acquisition import CHANGES, Change, save_changed
from lymphocytosis.contract.images import DECODE_ERRORS, list_cell_images, load_rgb
from lymphocytosis.contract.layout import SPLIT_CSVS
from lymphocytosis.contract.provenance import require_same
from lymphocytosis.contract.store import read_provenance
from lymphocytosis.errors import InputError

log = logging.getLogger("site_shift")
SPLIT = "trainset"  # the labelled patients: every one of them is in some outer test fold
DONE = ".complete"


def write_changed_dataset(root: Path, target: Path, change: Change) -> Path:
    """`root`'s labelled patients with `change` applied to every image, in the challenge layout, at `target`.
    Written to a temporary sibling and renamed when complete, so a folder that exists is whole."""
    if (target / DONE).is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    csv_name = SPLIT_CSVS[SPLIT]
    (partial / SPLIT).mkdir(parents=True)
    shutil.copyfile(root / SPLIT / csv_name, partial / SPLIT / csv_name)
    n_images = 0
    for folder in sorted(p for p in (root / SPLIT).iterdir() if p.is_dir()):
        out = partial / SPLIT / folder.name
        out.mkdir()
        for path in list_cell_images(folder):
            try:
                image = load_rgb(path)
            except DECODE_ERRORS:
                continue  # the extraction of the unchanged dataset skips (and records) it too
            save_changed(image, change, out / path.stem)  # a JPEG change re-encodes the decoded pixels
            n_images += 1
    (partial / DONE).write_text(json.dumps({"change": change.name, "description": change.description,
                                            "n_images": n_images}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log.info("%s: wrote %d changed images (%s)", target, n_images, change.description)
    return target


def weights_option(provenance: dict, weights: str | None) -> str | None:
    """The --weights that reproduces the unchanged file's weights (its digest is checked after extraction)."""
    if weights:
        return weights
    source = str(provenance.get("weights_source", ""))
    if source.startswith("embedded"):
        return "embedded"
    if source.startswith("hub"):
        return "hub"
    raise InputError(f"the embeddings were made with weights from {source!r}: pass --weights FILE (the same file)")


def extract_settings(provenance: dict, weights: str | None):
    from lymphocytosis.extract.extraction import ExtractSettings

    prep = json.loads(provenance["preprocessing"])
    return ExtractSettings(model=provenance["model"], weights=weights_option(provenance, weights), crop=prep["crop"],
                           input_size=prep["input_size"], tta=provenance["tta"] != "none",
                           precision=provenance["precision"], dtype=provenance["dtype"], batch_size=128, workers=None,
                           device="cpu", features=provenance["features"], stain=prep.get("stain", "none"),
                          views=False)  # changed images are only predicted: no training views


def embed_changed(dataset: Path, out: Path, provenance: dict, weights: str | None) -> Path:
    """Embed the changed dataset exactly as the unchanged one was (same model, weights, crop, precision...);
    refuses a result whose provenance differs."""
    from lymphocytosis.extract.extraction import extract

    out.parent.mkdir(parents=True, exist_ok=True)
    extract(dataset, out, extract_settings(provenance, weights))
    require_same(provenance, read_provenance(out), f"{out}: not made like the unchanged embeddings",
                 "delete it and rerun")
    return out


def prepare(root: Path, cache: Path, embeddings: Path, names: list[str], weights: str | None = None,
            embeddings_dir: Path | None = None) -> dict[str, Path]:
    """Changed datasets and their embeddings (in `embeddings_dir`, default <cache>/embeddings) for each change of
    `names`; returns change -> embeddings file."""
    provenance = read_provenance(embeddings)
    embeddings_dir = embeddings_dir or cache / "embeddings"
    files = {}
    for name in names:
        dataset = write_changed_dataset(root, cache / "images" / name, CHANGES[name])
        files[name] = embed_changed(dataset, embeddings_dir / f"{name}.h5", provenance, weights)
        log.info("change %s: embeddings ready in %s", name, files[name])
    return files


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="prepare the site-shift benchmark's changed embeddings only")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--changes", nargs="+", default=list(CHANGES), choices=list(CHANGES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache = args.cache or Path("artifacts/site_shift") / args.root.resolve().name
    prepare(args.root, cache, args.embeddings, args.changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
