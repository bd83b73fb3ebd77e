"""Published cost figures of the zoo (ImageNet-1k classifiers at their default resolution).

MIT family: the precise random-init re-counts of the official zoo; Microsoft family: the paper's
table. Used to show a profile beside the reference and to test that our models reproduce it.
"""

from __future__ import annotations

# name: (params in millions, MACs in millions). Where the paper rounds to two digits, the exact
# count of the official code is kept instead (M0 only).
# name: (params in millions, MACs in millions)
PUBLISHED_COST: dict[str, tuple[float, float]] = {
    "efficientvit_b0": (3.41, 100.0),
    "efficientvit_b1": (9.10, 519.0),
    "efficientvit_b2": (24.33, 1585.0),
    "efficientvit_b3": (48.65, 3954.0),
    "efficientvit_l1": (52.65, 5260.0),
    "efficientvit_l2": (63.71, 6950.0),
    "efficientvit_l3": (246.04, 27600.0),
    "efficientvit_m0": (2.35, 79.0),  # paper rounds to 2.3; official code and timm count 2,349,436
    "efficientvit_m1": (3.0, 167.0),
    "efficientvit_m2": (4.2, 201.0),
    "efficientvit_m3": (6.9, 263.0),
    "efficientvit_m4": (8.8, 299.0),
    "efficientvit_m5": (12.4, 522.0),
}
