"""Regenerate the example data: training rows and two batches to judge against them.

examples/baseline_data.json holds synthetic credit-risk training rows in the original
API's shape (a list of records); examples/batches/ holds a batch drawn like them
(today.csv) and one that drifted (drifted.csv: older, richer applicants, more of them
on mobile), for `driftline compare`. examples/scored_baseline.csv holds the training
rows with the model's answer, `default_probability` (the batches have it too), and
examples/credit-risk-profile.json, the example monitor's baseline, is built from it by
`driftline baseline build`, which also measures the model's performance on them against
`defaulted`, the outcome each applicant's probability draws. Values come from fixed
distributions with fixed seeds, so the files are reproducible:
`python examples/make_baseline.py`.
"""

import csv
import json
from pathlib import Path

import numpy as np

from driftline.cli import main as driftline

HERE = Path(__file__).parent
CHANNELS = ["web", "mobile", "branch", "partner"]


def draw(rows: int, seed: int, *, drift: bool = False) -> list[dict[str, object]]:
    """Rows of the credit-risk features; `drift` shifts age, income and channel."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(41, 12, rows), 18, 90).round().astype(int)
    income = np.round(rng.lognormal(10.8, 0.45, rows), -2)
    tenure = np.clip(rng.gamma(2.0, 14.0, rows), 0, 240).round().astype(int)
    credit_score = np.clip(rng.normal(680, 60, rows), 300, 850).round().astype(int)
    num_products = rng.choice([1, 2, 3, 4, 5], rows, p=[0.45, 0.3, 0.15, 0.07, 0.03])
    category = rng.choice(
        ["basic", "standard", "premium", "enterprise"], rows, p=[0.4, 0.3, 0.2, 0.1]
    )
    region = rng.choice(
        ["north", "south", "east", "west", "central"], rows, p=[0.25, 0.2, 0.2, 0.2, 0.15]
    )
    channel = rng.choice(
        CHANNELS, rows, p=[0.25, 0.6, 0.1, 0.05] if drift else [0.45, 0.35, 0.15, 0.05]
    )
    if drift:
        age = np.clip(age + 9, 18, 90)
        income = np.round(income * 1.4, -2)
    out = []
    for i in range(rows):
        out.append(
            {
                "age": int(age[i]),
                # Some applicants decline to state an income; some records lost the region.
                "income": None if rng.random() < 0.03 else float(income[i]),
                "tenure_months": int(tenure[i]),
                "credit_score": int(credit_score[i]),
                "num_products": int(num_products[i]),
                "product_category": str(category[i]),
                "region": None if rng.random() < 0.01 else str(region[i]),
                "channel": str(channel[i]),
            }
        )
    return out


def scored(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows with the example model's default probability (a fixed logistic model)."""
    out = []
    for row in rows:
        income = row["income"] if row["income"] is not None else 60000.0
        logit = (
            -1.6
            - (float(row["credit_score"]) - 680) / 45  # type: ignore[arg-type]
            - (np.log(float(income)) - 10.8) * 1.2  # type: ignore[arg-type]
            + 0.25 * (float(row["num_products"]) - 1)  # type: ignore[arg-type]
            - (float(row["age"]) - 41) / 30  # type: ignore[arg-type]
        )
        out.append({**row, "default_probability": round(float(1 / (1 + np.exp(-logit))), 4)})
    return out


def labelled(rows: list[dict[str, object]], seed: int) -> list[dict[str, object]]:
    """Scored rows with their outcome, `defaulted` (1 or 0), drawn from the model's probability."""
    rng = np.random.default_rng(seed)
    draws = rng.random(len(rows))
    return [
        {**row, "defaulted": int(u < float(row["default_probability"]))}  # type: ignore[arg-type]
        for row, u in zip(rows, draws, strict=True)
    ]


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """Rows as CSV; an empty cell for a missing value."""
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


if __name__ == "__main__":
    # One record per line: small, and diffs stay readable.
    baseline = draw(4000, 20250529)
    text = "[\n" + ",\n".join(json.dumps(row) for row in baseline) + "\n]\n"
    (HERE / "baseline_data.json").write_text(text)
    write_csv(HERE / "batches" / "today.csv", scored(draw(1000, 20250601)))
    write_csv(HERE / "batches" / "drifted.csv", scored(draw(1000, 20250602, drift=True)))
    # The same training rows, scored: the features' profile is the one baseline_data.json
    # gives, the predictions' is the model's on its training data, and its performance
    # there (accuracy, AUC) is what labels arriving later are compared with.
    write_csv(HERE / "scored_baseline.csv", labelled(scored(baseline), 20250530))
    # fmt: off
    driftline([
        "baseline", "build", str(HERE / "scored_baseline.csv"),
        "--numeric", "num_products",
        "--prediction-kind", "score", "--prediction", "default_probability",
        "--label", "defaulted",
        "-o", str(HERE / "credit-risk-profile.json"),
    ])
    # fmt: on
