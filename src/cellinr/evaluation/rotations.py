"""Rotation report: is shape disentangled from orientation in a run trained with learned rotations?

A run trained on rotated copies of the same cells should give the copies (nearly) the same latent
code and put the orientation into the learned rotations. This module measures both:

- Codes: Euclidean distances between the latent codes of rotated copies of one cell ("within") and
  between codes of different cells ("between"); their ratio (0 ideal) and the retrieval rate, the
  fraction of copies whose nearest other code belongs to a copy of the same cell (1 ideal).
- Rotations, when the applied rotations are known. Convention: rotation matrices act on column
  vectors (x, y, z); copy i of a cell is the base shape rotated by A_i, i.e. mask_i(p) = base(A_i^T p);
  the network sees SDF_i(p) = f(z_i, R_i p). With one code per cell, f(z, R_i p) = base(A_i^T p) for
  every copy, so M_i = R_i A_i must be the same matrix for all copies (the canonical orientation of the
  cell, which is not identifiable itself). Reported: the pairwise angular error angle(M_i M_j^T) over
  pairs of copies, and each copy's angle to the group's mean rotation (chordal L2 mean).
  If the applied rotations are given the other way round (mask_i(p) = base(A_i p)), set
  ``"convention": "inverse"`` in the groups file. A shape with symmetries (e.g. an ellipsoid, which
  looks the same after half turns about its axes) has several equally good rotations, so large errors
  on such shapes can reflect the symmetry rather than a failure.

Groups file (JSON)::

    {"groups": {"cellA": ["cellA_rot0", "cellA_rot1"], ...},      # optional: else from names
     "rotations": {"cellA_rot0": [[1,0,0],[0,1,0],[0,0,1]], ...},  # optional: applied 3x3 matrices
     "convention": "rotated"}                                       # or "inverse"

Without ``groups``, copies are recognised by names ending in ``_rot<k>`` / ``-rot<k>`` / ``_r<k>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import json_safe
from cellinr.errors import InputError, ParameterError

logger = logging.getLogger(__name__)

_SUFFIX = re.compile(r"^(?P<base>.+?)[_-](?:rot|rotation|r)[_-]?\d+$")
CONVENTIONS = ("rotated", "inverse")


def infer_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Groups of rotated copies recognised by a ``_rot<k>`` style suffix (groups of one are dropped)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        m = _SUFFIX.match(n)
        if m:
            groups.setdefault(m.group("base"), []).append(n)
    return {g: members for g, members in groups.items() if len(members) > 1}


def read_groups_file(path: str | os.PathLike) -> dict:
    """Read and check a groups file (see the module docstring)."""
    from cellinr._util.schema import Choice, ListOf, check, read_json

    path = Path(path)
    spec = read_json(path, {"?convention": Choice("rotated", "inverse")}, what="groups file")
    if not set(spec) <= {"groups", "rotations", "convention"}:
        raise InputError(f"{path}: unknown key {sorted(set(spec) - {'groups', 'rotations', 'convention'})[0]} "
                         "(known: groups, rotations, convention)")
    for name, members in (spec.get("groups") or {}).items() if isinstance(spec.get("groups"), dict) else ():
        check(members, ListOf(str), f"{path}: key groups.{name}")
    if "groups" in spec and not isinstance(spec["groups"], dict):
        raise InputError(f"{path}: key groups: expected an object {{cell: [sequence names]}}")
    if "rotations" in spec and not isinstance(spec["rotations"], dict):
        raise InputError(f"{path}: key rotations: expected an object {{sequence: 3x3 matrix}}")
    for name, value in (spec.get("rotations") or {}).items():
        check(value, ListOf(ListOf(float, length=3), length=3), f"{path}: key rotations.{name}")
    return spec


def _rotation_angle(r: np.ndarray) -> np.ndarray:
    """Angle (radians) of rotation matrices (..., 3, 3), stable near 0."""
    trace = np.trace(r, axis1=-2, axis2=-1)
    skew = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    return np.arctan2(np.linalg.norm(skew, axis=-1) / 2.0, (trace - 1.0) / 2.0)


def _project_so3(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _as_rotation(value, name: str) -> np.ndarray:
    r = np.asarray(value, dtype=float)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise InputError(f"rotations[{name!r}]: expected a 3x3 matrix, got shape {r.shape}")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
        raise InputError(f"rotations[{name!r}]: not a rotation matrix (R R^T != I or det < 0)")
    return r


def rotation_metrics(
    codes: np.ndarray,
    rotations: np.ndarray,
    names: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    applied: Mapping[str, np.ndarray] | None = None,
    convention: str = "rotated",
) -> dict:
    """Code distances of rotated copies and angular errors of learned rotations.

    Parameters
    ----------
    codes : (N, L) float ndarray
        Latent codes of the training sequences.
    rotations : (N, 3, 3) float ndarray
        Learned rotations R_i (the network sees R_i p).
    names : the N sequence names
    groups : group -> names of its rotated copies; default :func:`infer_groups`
    applied : name -> applied (3, 3) rotation A_i, optional
    convention : ``rotated`` (mask_i(p) = base(A_i^T p)) or ``inverse`` (mask_i(p) = base(A_i p))

    Returns
    -------
    dict
        ``codes``: within/between distance statistics, ratio and retrieval; ``rotations``: angular
        errors in degrees (when ``applied`` is given); ``per_sequence``: one row per sequence;
        ``within`` / ``between``: the distance samples.
    """
    codes = np.asarray(codes, dtype=float)
    rotations = np.asarray(rotations, dtype=float)
    names = list(names)
    if codes.ndim != 2 or len(codes) != len(names) or rotations.shape != (len(names), 3, 3):
        raise InputError(f"codes {codes.shape}, rotations {rotations.shape} and {len(names)} names do not match")
    if convention not in CONVENTIONS:
        raise ParameterError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")
    index = {n: i for i, n in enumerate(names)}
    groups = dict(groups) if groups is not None else infer_groups(names)
    unknown = sorted({m for members in groups.values() for m in members if m not in index})
    if unknown:
        raise InputError(f"groups name sequences the run does not have: {', '.join(unknown[:5])}"
                         + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""))
    group_of = {}
    for g, members in groups.items():
        for m in members:
            if m in group_of:
                raise InputError(f"groups: sequence {m!r} is in two groups ({group_of[m]!r}, {g!r})")
            group_of[m] = g

    diff = codes[:, None, :] - codes[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    gid = np.array([group_of.get(n, f"\0{n}") for n in names])  # ungrouped: a group of its own
    same = gid[:, None] == gid[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    within = dist[upper & same]
    between = dist[upper & ~same]
    code_stats = {
        "n_sequences": len(names), "n_groups": len(groups), "n_grouped": len(group_of),
        "code_norm_mean": float(np.linalg.norm(codes, axis=1).mean()),
        "within_mean": float(within.mean()) if len(within) else float("nan"),
        "within_median": float(np.median(within)) if len(within) else float("nan"),
        "between_mean": float(between.mean()) if len(between) else float("nan"),
        "between_median": float(np.median(between)) if len(between) else float("nan"),
    }
    code_stats["ratio_within_between"] = (
        code_stats["within_mean"] / code_stats["between_mean"]
        if len(within) and len(between) and code_stats["between_mean"] > 0 else float("nan")
    )
    d_other = dist.copy()
    np.fill_diagonal(d_other, np.inf)
    nearest = np.argmin(d_other, axis=1) if len(names) > 1 else np.zeros(len(names), int)
    grouped = np.array([n in group_of for n in names])
    hits = np.array([same[i, nearest[i]] for i in range(len(names))]) if len(names) > 1 else np.zeros(0, bool)
    code_stats["retrieval"] = float(hits[grouped].mean()) if grouped.any() and len(names) > 1 else float("nan")

    per_seq = []
    for i, n in enumerate(names):
        per_seq.append({
            "sequence": n, "group": group_of.get(n, ""),
            "nearest_code": names[nearest[i]] if len(names) > 1 else "",
            "nearest_is_copy": bool(hits[i]) if len(names) > 1 and n in group_of else "",
            "learned_angle_deg": float(np.degrees(_rotation_angle(rotations[i]))),
            "rotation_error_deg": float("nan"),
        })

    rot_stats: dict = {}
    pair_errors: list[float] = []
    if applied:
        missing = sorted(n for n in applied if n not in index)
        if missing:
            raise InputError(f"rotations name sequences the run does not have: {', '.join(missing[:5])}")
        a = {n: _as_rotation(v, n) for n, v in applied.items()}
        if convention == "inverse":
            a = {n: r.T for n, r in a.items()}
        for g, members in groups.items():
            known = [m for m in members if m in a]
            if len(known) < 2:
                continue
            m_mats = np.stack([rotations[index[m]] @ a[m] for m in known])
            mean = _project_so3(m_mats.mean(0))
            errs = np.degrees(_rotation_angle(m_mats @ mean.T))
            for m, e in zip(known, errs):
                per_seq[index[m]]["rotation_error_deg"] = float(e)
            for p in range(len(known)):
                for q in range(p + 1, len(known)):
                    pair_errors.append(float(np.degrees(_rotation_angle(m_mats[p] @ m_mats[q].T))))
        errs = np.array([r["rotation_error_deg"] for r in per_seq], float)
        errs = errs[np.isfinite(errs)]
        pe = np.array(pair_errors)
        rot_stats = {
            "convention": convention, "n_pairs": len(pe),
            "pair_error_mean_deg": float(pe.mean()) if len(pe) else float("nan"),
            "pair_error_median_deg": float(np.median(pe)) if len(pe) else float("nan"),
            "pair_error_max_deg": float(pe.max()) if len(pe) else float("nan"),
            "error_to_group_mean_deg": float(errs.mean()) if len(errs) else float("nan"),
            "fraction_pairs_within_10_deg": float((pe <= 10).mean()) if len(pe) else float("nan"),
        }
        # reference: the pairwise spread the applied rotations alone would leave uncorrected
        spread = []
        for members in groups.values():
            known = [m for m in members if m in a]
            for p in range(len(known)):
                for q in range(p + 1, len(known)):
                    spread.append(float(np.degrees(_rotation_angle(a[known[p]] @ a[known[q]].T))))
        rot_stats["applied_pair_angle_mean_deg"] = float(np.mean(spread)) if spread else float("nan")
    return {"codes": code_stats, "rotations": rot_stats, "per_sequence": per_seq,
            "within": within, "between": between, "pair_errors": np.array(pair_errors),
            "distance_matrix": dist, "groups": groups}


def rotation_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    groups: str | os.PathLike | Mapping | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the rotation report of a run trained with learned rotations.

    Parameters
    ----------
    run_dir : a run folder (``cellinr train --rotations``)
    out : report folder to create
    groups : a groups file or its parsed dict (see the module docstring); default: groups from names

    Returns
    -------
    Path
        ``out`` with ``report.md``, ``report.html``, ``metrics.json``, ``sequences.csv`` and figures.
    """
    from cellinr._util.outputs import (
        atomic_dir,
        atomic_write_text,
        check_new_output,
        check_no_overlap,
    )
    from cellinr.measurement import report as rp
    from cellinr.model.run import load_run

    check_no_overlap([run_dir, groups if isinstance(groups, (str, os.PathLike)) else None], [out])
    check_new_output(out, overwrite=overwrite)
    spec: dict = {}
    if groups is not None:
        spec = dict(groups) if isinstance(groups, Mapping) else read_groups_file(groups)
    run = load_run(run_dir, device="cpu")
    codes = run.latents.detach().cpu().numpy()
    rots = run.rotations.detach().cpu().numpy()
    learned = bool(getattr(getattr(run.config, "train", None), "rotations", True))
    res = rotation_metrics(codes, rots, run.names, groups=spec.get("groups"), applied=spec.get("rotations"),
                           convention=spec.get("convention", "rotated"))
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        figures = {}
        if len(res["within"]) and len(res["between"]):
            rp.histogram_pair(res["within"], res["between"], ["copies of one cell", "different cells"],
                              tmp / "code_distances.png", xlabel="latent code distance",
                              title=f"within / between = {rp.format_number(res['codes']['ratio_within_between'], 3)}")
            figures["code_distances.png"] = "Distances between the codes of rotated copies and of different cells."
        _distance_matrix_figure(res, run.names, tmp / "code_matrix.png")
        figures["code_matrix.png"] = "Code distance matrix, sequences ordered by group."
        if len(res["pair_errors"]):
            rp.histogram_pair(res["pair_errors"], np.zeros(0), ["pairs of copies", ""], tmp / "rotation_errors.png",
                              xlabel="angular error [degrees]", title="relative rotation error of copies",
                              bins=np.arange(0.0, 181.0, 5.0), density=False)
            figures["rotation_errors.png"] = "Angular error between the recovered relative rotations of copies."
        from cellinr.measurement.tables import write_rows

        write_rows(tmp / "sequences.csv", res["per_sequence"])
        metrics = {"run": str(run_dir), "rotations_learned": learned, "codes": res["codes"],
                   "rotations": res["rotations"], "groups": res["groups"]}
        atomic_write_text(tmp / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
        rep = rp.Report("Rotation report")
        rep.paragraph(f"Run `{run_dir}`: {len(run.names)} sequences, code length {codes.shape[1]}, "
                      f"{res['codes']['n_groups']} groups of rotated copies ({res['codes']['n_grouped']} sequences)"
                      + ("" if learned else "; this run did not learn rotations") + ".")
        c = res["codes"]
        rep.heading("Latent codes")
        rep.table(["measure", "value", "ideal"], [
            ["mean distance between copies of one cell", c["within_mean"], "0"],
            ["mean distance between different cells", c["between_mean"], "large"],
            ["ratio within / between", c["ratio_within_between"], "0"],
            ["retrieval (nearest code is a copy)", c["retrieval"], "1"],
            ["mean code norm", c["code_norm_mean"], ""],
        ])
        if res["rotations"]:
            r = res["rotations"]
            rep.heading("Recovered rotations")
            rep.table(["measure", "value [degrees]"], [
                ["pairwise error, mean", r["pair_error_mean_deg"]],
                ["pairwise error, median", r["pair_error_median_deg"]],
                ["pairwise error, max", r["pair_error_max_deg"]],
                ["error to the group's mean rotation, mean", r["error_to_group_mean_deg"]],
                ["applied rotations between copies, mean (no correction)", r["applied_pair_angle_mean_deg"]],
            ])
            within10 = rp.format_number(r["fraction_pairs_within_10_deg"], 3)
            rep.paragraph(f"Fraction of pairs within 10 degrees: {within10}. "
                          "Error of a pair: angle of (R_i A_i)(R_j A_j)^T, 0 when the learned rotations undo the "
                          f"applied ones up to a common orientation (convention `{r['convention']}`).")
        elif not res["groups"]:
            rep.paragraph("No groups of rotated copies were given or recognised from the names "
                          "(`_rot<k>` suffixes); pass a groups file with --groups.")
        else:
            rep.paragraph("Applied rotations unknown: pass them in the groups file (`rotations`) for angular errors.")
        rep.heading("Figures")
        for fname, caption in figures.items():
            rep.image(fname, caption)
        rep.paragraph("Per-sequence values: `sequences.csv`.")
        rep.write(tmp)
    return out


def _distance_matrix_figure(res: dict, names: Sequence[str], path: Path) -> None:
    from cellinr._util.figures import subplots
    from cellinr.measurement import report as rp

    group = [r["group"] for r in res["per_sequence"]]
    order = sorted(range(len(names)), key=lambda i: (group[i] == "", group[i], names[i]))
    d = res["distance_matrix"][np.ix_(order, order)]
    n = len(names)
    size = min(8.0, 3.0 + 0.12 * n)
    fig, ax = subplots(figsize=(size + 1.0, size))
    im = ax.imshow(d, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="code distance", shrink=0.8)
    if n <= 40:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        labels = [names[i] for i in order]
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticklabels(labels, fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("latent code distances (ordered by group)", fontsize=9)
    fig.tight_layout()
    rp.save_figure(fig, path)


