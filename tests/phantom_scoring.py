"""Scoring segmentation variants on phantoms against their ground truth (shared by the tests)."""

from __future__ import annotations

import numpy as np

from calcimeasure import SegmentationParams, segment


def score_modes(films, modes: dict) -> tuple[dict, dict, dict]:
    """Per mode: total-area errors (one per film), lesions >= 5 mm² found, false positives >= 5 mm².

    Parameters
    ----------
    films : iterable of (body_part, seed)
        Realistic phantoms to render.
    modes : dict
        Name -> :class:`SegmentationParams` overrides (a dict).

    A lesion is found when >= 30 % of it is segmented; a segmented component >= 5 mm² is a false
    positive when < 30 % of it is lesion.
    """
    from calcimeasure.phantom import PhantomSpec, render_image

    errs = {k: [] for k in modes}
    found = dict.fromkeys(modes, 0)
    false_pos = dict.fromkeys(modes, 0)
    for body, seed in films:
        img = render_image(PhantomSpec.preset("realistic", body_part=body), seed=seed)
        pa = img.spacing_mm[0] * img.spacing_mm[1]
        ins = [l for l in img.lesions if l.in_field]
        truth = np.isin(img.labels, [l.lesion_id for l in ins])
        true_area = sum(l.area_mm2 for l in ins)
        for name, overrides in modes.items():
            lab = segment(img.pixels, spacing_mm=img.spacing_mm, params=SegmentationParams(**overrides)).labels
            errs[name].append(abs((lab > 0).sum() * pa - true_area) / true_area)
            found[name] += sum((lab[img.labels == l.lesion_id] > 0).mean() >= 0.3 for l in ins if l.area_mm2 >= 5)
            for i in range(1, lab.max() + 1):
                m = lab == i
                false_pos[name] += bool(m.sum() * pa >= 5 and truth[m].mean() < 0.3)
    return errs, found, false_pos
