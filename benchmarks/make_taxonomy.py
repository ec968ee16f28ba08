"""Write a generated taxonomy of S species (2 kingdoms, 6 phyla, 20 classes, 80 orders, 400 families,
2,000 genera; each node gets a random parent) as a CSV, for scale runs:

    .venv/bin/python benchmarks/make_taxonomy.py 10000 tax10k.csv
"""
import numpy as np, pandas as pd, sys

rng = np.random.default_rng(0)
S = int(sys.argv[1]); sizes = [2, 6, 20, 80, 400, 2000]
rows = []
parents = [rng.integers(0, sizes[i - 1], sizes[i]) if i else None for i in range(6)]
genus_of = rng.integers(0, sizes[-1], S)
for s in range(S):
    g = genus_of[s]
    node = g
    chain = [node]
    for r in range(5, 0, -1):
        node = parents[r][node]; chain.append(node)
    chain = chain[::-1]
    rows.append({"kingdom": f"K{chain[0]}", "phylum": f"P{chain[1]}", "class": f"C{chain[2]}", "order": f"O{chain[3]}",
                 "family": f"F{chain[4]}", "genus": f"G{chain[5]}", "species": f"G{chain[5]} s{s}"})
pd.DataFrame(rows).to_csv(sys.argv[2], index=False)
