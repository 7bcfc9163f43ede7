"""Draw each configuration's test accuracy as an SVG bar chart (a `plots:` image)."""
import argparse
import csv

ap = argparse.ArgumentParser()
ap.add_argument("--table", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()

with open(args.table) as f:
    rows = list(csv.DictReader(f))
width, height, bar = 60 * len(rows) + 40, 220, 40
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
for i, r in enumerate(rows):
    acc = float(r["accuracy"])
    h = acc * 160
    x = 30 + 60 * i
    parts.append(f'<rect x="{x}" y="{180 - h:.1f}" width="{bar}" height="{h:.1f}" fill="#0072b2"/>')
    parts.append(f'<text x="{x}" y="{175 - h:.1f}" font-size="11">{acc:.3f}</text>')
    label = f"{float(r['lr']):g}/{r['epochs']}"
    parts.append(f'<text x="{x}" y="198" font-size="11">{label}</text>')
parts.append('<text x="30" y="215" font-size="11">lr/epochs: test accuracy</text></svg>')
with open(args.out, "w") as f:
    f.write("\n".join(parts) + "\n")
