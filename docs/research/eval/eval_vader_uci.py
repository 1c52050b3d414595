"""vaderSentiment 3.3.2 on the UCI 'Sentiment Labelled Sentences' (Kotzias et al. 2015) as shipped in
npm sentiment@5.0.2 test/fixtures/{amazon,imdb,yelp}.json (1000 items each + 1 empty trailing item, skipped).
Usage: venv/bin/python eval_vader_uci.py FIXTUREDIR OUTDIR"""
import sys, os, json
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
D, OUT = sys.argv[1], sys.argv[2]
an = SentimentIntensityAnalyzer()
os.makedirs(OUT, exist_ok=True)
tot = [0]*5
for name in ("amazon", "imdb", "yelp"):
    items = [x for x in json.load(open(os.path.join(D, name + ".json"), encoding="utf-8")) if x.get("class") in (0, 1)]
    comp = [an.polarity_scores(x["text"])["compound"] for x in items]
    with open(os.path.join(OUT, f"uci_{name}_vader332.tsv"), "w", encoding="utf-8") as f:
        f.write("index\tclass\tcompound\n")
        for i, (x, c) in enumerate(zip(items, comp)):
            f.write(f"{i}\t{x['class']}\t{c}\n")
    n = len(items)
    zero = sum(c == 0 for c in comp)
    strict = sum((c > 0 and x["class"] == 1) or (c < 0 and x["class"] == 0) for x, c in zip(items, comp))
    ge0 = sum(((c >= 0) == (x["class"] == 1)) for x, c in zip(items, comp))
    band = sum((c >= 0.05 and x["class"] == 1) or (c <= -0.05 and x["class"] == 0) for x, c in zip(items, comp))
    neutral = sum(-0.05 < c < 0.05 for c in comp)
    print(f"{name}: n={n}  compound==0: {zero}  "
          f"acc(c>0 pos, c<0 neg, 0 wrong)={strict/n:.4f} [{strict}]  "
          f"acc(c>=0 pos)={ge0/n:.4f} [{ge0}]  "
          f"acc(+-0.05 band, neutral wrong)={band/n:.4f} [{band}] neutral={neutral}  "
          f"acc on decided(c!=0)={strict/(n-zero):.4f}")
    for k, v in enumerate((n, zero, strict, ge0, band)): tot[k] += v
n, zero, strict, ge0, band = tot
print(f"ALL: n={n} compound==0: {zero} acc(strict)={strict/n:.4f} [{strict}] acc(c>=0 pos)={ge0/n:.4f} [{ge0}] acc(band)={band/n:.4f} [{band}] decided={strict/(n-zero):.4f}")
