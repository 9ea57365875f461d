from __future__ import annotations

import unittest
from collections import Counter

import torch

from monai_dclcstp.engines.class_balance import (
    balanced_sampler,
    check_class_weighting,
    class_counts,
    class_weights,
)

ITEMS = [{"image": f"img{i}.png", "label": 0 if i < 10 else 1} for i in range(100)]  # 10 % class 0


class TestClassBalance(unittest.TestCase):
    def test_counts(self):
        self.assertEqual(class_counts(ITEMS, 3), [10, 90, 0])

    def test_loss_weights_inverse_frequency(self):
        w = class_weights(ITEMS, 2, "loss")
        torch.testing.assert_close(w, torch.tensor([100 / (2 * 10), 100 / (2 * 90)]))
        # weighted mean over the items is 1: each class contributes equally to the loss
        self.assertAlmostEqual(float((w[0] * 10 + w[1] * 90) / 100), 1.0, places=6)
        self.assertAlmostEqual(float(w[0] * 10), float(w[1] * 90), places=4)
        self.assertEqual(float(class_weights(ITEMS, 3, "loss")[2]), 0.0)  # absent class
        self.assertIsNone(class_weights(ITEMS, 2, "none"))
        self.assertIsNone(class_weights(ITEMS, 2, "sampler"))

    def test_sampler_balances_and_is_seeded(self):
        sampler = balanced_sampler(ITEMS, 2, "sampler", seed=3, num_samples=4000)
        drawn = list(sampler)
        freq = Counter(ITEMS[i]["label"] for i in drawn)
        self.assertAlmostEqual(freq[0] / len(drawn), 0.5, delta=0.04)
        self.assertEqual(drawn, list(balanced_sampler(ITEMS, 2, "sampler", seed=3, num_samples=4000)))
        self.assertEqual(len(balanced_sampler(ITEMS, 2, "sampler")), len(ITEMS))
        self.assertIsNone(balanced_sampler(ITEMS, 2, "loss"))

    def test_modes(self):
        self.assertEqual(check_class_weighting(None), "none")
        self.assertEqual(check_class_weighting("Loss"), "loss")
        with self.assertRaises(ValueError) as ctx:
            check_class_weighting("focal")
        self.assertIn("none, loss, sampler", str(ctx.exception))

    def test_bad_labels_name_the_image(self):
        for bad in ({"image": "x.png", "label": [0, 1]}, {"image": "y.png"}, {"image": "z.png", "label": 5}):
            with self.assertRaises(ValueError) as ctx:
                class_counts([*ITEMS[:3], bad], 2)
            self.assertIn(bad["image"], str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
