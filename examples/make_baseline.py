"""Regenerate examples/baseline_data.json: synthetic credit-risk training rows.

The shape is the original API's (a list of records); values are drawn from fixed distributions
with a fixed seed so the file is reproducible: `python examples/make_baseline.py`.
"""

import json
from pathlib import Path

import numpy as np

ROWS = 4000
rng = np.random.default_rng(20250529)

age = np.clip(rng.normal(41, 12, ROWS), 18, 90).round().astype(int)
income = np.round(rng.lognormal(10.8, 0.45, ROWS), -2)
tenure = np.clip(rng.gamma(2.0, 14.0, ROWS), 0, 240).round().astype(int)
credit_score = np.clip(rng.normal(680, 60, ROWS), 300, 850).round().astype(int)
num_products = rng.choice([1, 2, 3, 4, 5], ROWS, p=[0.45, 0.3, 0.15, 0.07, 0.03])
category = rng.choice(["basic", "standard", "premium", "enterprise"], ROWS, p=[0.4, 0.3, 0.2, 0.1])
region = rng.choice(
    ["north", "south", "east", "west", "central"], ROWS, p=[0.25, 0.2, 0.2, 0.2, 0.15]
)
channel = rng.choice(["web", "mobile", "branch", "partner"], ROWS, p=[0.45, 0.35, 0.15, 0.05])

rows = []
for i in range(ROWS):
    rows.append(
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

# One record per line: small, and diffs stay readable.
text = "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"
Path(__file__).with_name("baseline_data.json").write_text(text)
