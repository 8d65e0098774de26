"""Linear probes: the one logistic-regression fitter every study uses (Figure 10's -ing
probes, the concept-features study's L1 probes)."""
from __future__ import annotations


def probe_accuracy(x_train, y_train, x_test, y_test, *, seed: int = 0, C: float = 1.0, l1: bool = False,
                   max_iter: int = 2000) -> tuple[float, float]:
    """Train and held-out accuracy of a logistic regression on standardised inputs.

    ``l1=False``: L2 penalty, lbfgs (scikit-learn's defaults); ``l1=True``: L1 penalty with
    liblinear (the concept-features study's sparse probe). ``C`` is the inverse regularisation.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if l1:
        # scikit-learn >= 1.8 spells penalty="l1" as l1_ratio=1
        new = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
        extra = {"solver": "liblinear", **({"l1_ratio": 1.0} if new else {"penalty": "l1"})}
    else:
        extra = {}
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, random_state=seed, max_iter=max_iter, **extra))
    clf.fit(x_train, y_train)
    return float(clf.score(x_train, y_train)), float(clf.score(x_test, y_test))
