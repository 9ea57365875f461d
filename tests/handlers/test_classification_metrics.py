from __future__ import annotations

import unittest

import numpy as np
from parameterized import parameterized

from monai_dclcstp.handlers.classification_metrics import (
    classification_metrics,
    confusion_matrix,
    predict_classes,
    select_threshold,
)


def _auc_by_pairs(score, positive):
    """ROC-AUC as the probability that a positive outranks a negative (ties count 1/2)."""
    pos, neg = score[positive], score[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def _binary_case(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return np.stack([1 - s, s], 1), y


class TestClassificationMetrics(unittest.TestCase):
    def test_binary_against_hand_counts(self):
        p, y = _binary_case()
        m = classification_metrics(p, y, classes=["neg", "pos"])
        pred = p.argmax(1)
        tp = int(((pred == 1) & (y == 1)).sum())
        tn = int(((pred == 0) & (y == 0)).sum())
        fp = int(((pred == 1) & (y == 0)).sum())
        fn = int(((pred == 0) & (y == 1)).sum())
        self.assertAlmostEqual(m["accuracy"], (tp + tn) / len(y))
        self.assertAlmostEqual(m["sensitivity"], tp / (tp + fn))
        self.assertAlmostEqual(m["specificity"], tn / (tn + fp))
        self.assertAlmostEqual(m["precision"], tp / (tp + fp))
        self.assertAlmostEqual(m["f1"], 2 * tp / (2 * tp + fp + fn))
        self.assertAlmostEqual(m["balanced_accuracy"], (tp / (tp + fn) + tn / (tn + fp)) / 2)
        self.assertAlmostEqual(m["auc"], _auc_by_pairs(p[:, 1], y == 1))
        self.assertEqual(m["confusion_matrix"], [[tn, fp], [fn, tp]])
        self.assertEqual(m["per_class"]["neg"]["support"], int((y == 0).sum()))
        # the negative class's recall is the specificity
        self.assertAlmostEqual(m["per_class"]["neg"]["sensitivity"], m["specificity"])

    def test_positive_class_zero_swaps_roles(self):
        p, y = _binary_case(1)
        m1 = classification_metrics(p, y, positive_class=1)
        m0 = classification_metrics(p, y, positive_class=0)
        self.assertAlmostEqual(m0["sensitivity"], m1["specificity"])
        self.assertAlmostEqual(m0["specificity"], m1["sensitivity"])
        self.assertAlmostEqual(m0["accuracy"], m1["accuracy"])

    def test_multiclass_macro(self):
        rng = np.random.default_rng(2)
        y = rng.integers(0, 3, 90)
        p = rng.dirichlet([1, 1, 1], 90)
        p[np.arange(90), y] += 0.5
        p /= p.sum(1, keepdims=True)
        m = classification_metrics(p, y)
        cm = confusion_matrix(y, p.argmax(1), 3)
        recalls = np.diag(cm) / cm.sum(1)
        self.assertAlmostEqual(m["balanced_accuracy"], recalls.mean())
        self.assertAlmostEqual(m["sensitivity"], recalls.mean())
        self.assertAlmostEqual(m["accuracy"], np.trace(cm) / cm.sum())
        aucs = [_auc_by_pairs(p[:, c], y == c) for c in range(3)]
        self.assertAlmostEqual(m["auc"], float(np.mean(aucs)))
        self.assertIsNone(m["threshold"])
        self.assertIsNone(m["positive_class"])

    def test_undefined_values_are_none(self):
        p, _ = _binary_case()
        m = classification_metrics(p[:10], np.ones(10, dtype=int))
        self.assertIsNone(m["auc"])
        self.assertIsNone(m["specificity"])
        self.assertIsNotNone(m["accuracy"])

    def test_threshold_maximises_youden(self):
        p, y = _binary_case(3)
        t = select_threshold(p, y)
        score = p[:, 1]

        def youden(th):
            pred = score >= th
            return pred[y == 1].mean() + (~pred[y == 0]).mean() - 1

        best = max(youden(v) for v in np.concatenate([score, [0.0, 1.1]]))
        self.assertAlmostEqual(youden(t), best)
        m = classification_metrics(p, y, threshold=t)
        self.assertAlmostEqual(m["balanced_accuracy"], (youden(t) + 1) / 2)
        self.assertEqual(m["threshold"], t)

    def test_threshold_moves_decision_for_skewed_scores(self):
        """A model that follows a 90 % prior puts every score above 0.5; the threshold separates the classes."""
        y = np.array([0] * 10 + [1] * 90)
        s = np.concatenate([np.linspace(0.6, 0.7, 10), np.linspace(0.75, 0.99, 90)])
        p = np.stack([1 - s, s], 1)
        self.assertAlmostEqual(classification_metrics(p, y)["balanced_accuracy"], 0.5)
        t = select_threshold(p, y)
        self.assertTrue(0.7 < t < 0.75)
        self.assertAlmostEqual(classification_metrics(p, y, threshold=t)["balanced_accuracy"], 1.0)

    def test_threshold_single_class(self):
        p, _ = _binary_case()
        self.assertEqual(select_threshold(p[:5], np.zeros(5, dtype=int)), 0.5)

    def test_predict_classes(self):
        p = np.array([[0.3, 0.7], [0.8, 0.2]])
        np.testing.assert_array_equal(predict_classes(p), [1, 0])
        np.testing.assert_array_equal(predict_classes(p, threshold=0.8), [0, 0])
        np.testing.assert_array_equal(predict_classes(p, threshold=0.1, positive_class=0), [0, 0])

    @parameterized.expand(
        [
            [np.zeros((3, 2)), np.zeros(4, dtype=int)],
            [np.zeros((3, 1)), np.zeros(3, dtype=int)],
            [np.zeros((3, 2)), np.array([0, 1, 2])],
        ]
    )
    def test_bad_inputs(self, p, y):
        with self.assertRaises(ValueError):
            classification_metrics(p, y)


if __name__ == "__main__":
    unittest.main()
