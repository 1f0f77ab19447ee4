"""Decision curve: is acting on the model worth more than sending everyone, or no one, to cytometry?

At a threshold probability pt (the risk of leukaemia above which a hematologist would order cytometry), the
net benefit of a strategy is TP/N - FP/N x pt / (1 - pt): true leukaemias found, minus the unnecessary
cytometries weighed by how many of them one would accept per leukaemia found (Vickers & Elkin 2006). The
model's curve needs probabilities that are risks, so the recalibrated ones are the fair curve to read.
"""

from __future__ import annotations

import numpy as np

GRID = np.round(np.arange(0.02, 0.81, 0.02), 2)


def net_benefit(labels, probabilities, grid=GRID) -> np.ndarray:
    """Mean over repeats (rows of `probabilities`) of the net benefit of calling tumoral at p >= pt."""
    labels = np.asarray(labels) == 1
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    n = labels.size
    result = []
    for pt in grid:
        called = probabilities >= pt
        true_pos = (called & labels).sum(1) / n
        false_pos = (called & ~labels).sum(1) / n
        result.append(float(np.mean(true_pos - false_pos * pt / (1 - pt))))
    return np.array(result)


def treat_all(labels, grid=GRID) -> np.ndarray:
    prevalence = float(np.mean(np.asarray(labels) == 1))
    return np.array([prevalence - (1 - prevalence) * pt / (1 - pt) for pt in grid])


def decision_curves(labels, curves: dict[str, np.ndarray], grid=GRID) -> dict[str, list[float]]:
    """Net benefit per threshold of each named set of probabilities, of "cytometry for all" and "for none"."""
    result = {"threshold": [float(pt) for pt in grid]}
    for name, probabilities in curves.items():
        result[name] = net_benefit(labels, probabilities, grid).tolist()
    result["cytometry for all"] = treat_all(labels, grid).tolist()
    result["cytometry for none"] = [0.0] * len(grid)
    return result
