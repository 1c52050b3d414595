"""Reference evaluation of vaderSentiment 3.3.2 on the ICWSM-2014 ground-truth sets
shipped in the vaderSentiment-3.3.2 sdist (additional_resources/hutto_ICWSM_2014.tar.gz).
Usage: venv/bin/python eval_vader.py DATADIR OUTDIR
Ground truth: mean of >=20 human ratings on -4..+4.  Binary label: gt>0 -> pos, gt<0 -> neg.
Two filters: 'strict' drops gt==0 only; 'clear' drops |gt|<0.5.
Prediction: compound>0 -> pos, compound<0 -> neg, compound==0 -> abstain (counted as wrong).
Also reported: with the usual VADER +-0.05 neutral band (neutral counted as wrong)."""
import sys, os, math
import vaderSentiment.vaderSentiment as V

DATA, OUT = sys.argv[1], sys.argv[2]
SETS = ["tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"]

def load(name):
    rows = []
    with open(os.path.join(DATA, name + "_GroundTruth.txt"), encoding="utf-8-sig", newline="") as f:
        for line in f.read().split("\r\n"):
            if not line:
                continue
            i, r, t = line.split("\t", 2)
            rows.append((i, float(r), t))
    return rows

def ablate(kind):
    import importlib
    importlib.reload(V)
    if kind in ("no_caps", "lexicon_only"):
        V.C_INCR = 0.0
    if kind in ("no_boosters", "lexicon_only"):
        for k in V.BOOSTER_DICT: V.BOOSTER_DICT[k] = 0.0
    if kind in ("no_negation", "lexicon_only"):
        V.N_SCALAR = 1.0
    if kind in ("no_but", "lexicon_only"):
        V.SentimentIntensityAnalyzer._but_check = staticmethod(lambda w, s: s)
    if kind in ("no_punct", "lexicon_only"):
        V.SentimentIntensityAnalyzer._punctuation_emphasis = lambda self, t: 0.0
    if kind in ("no_idioms", "lexicon_only"):
        V.SPECIAL_CASES = {}
    return V.SentimentIntensityAnalyzer()

def metrics(rows, comp, flt, band):
    n = correct = abst = 0
    for (i, gt, t), c in zip(rows, comp):
        if flt == "strict" and gt == 0: continue
        if flt == "clear" and abs(gt) < 0.5: continue
        n += 1
        y = gt > 0
        if c > band: p = True
        elif c < -band: p = False
        else: abst += 1; continue
        correct += (p == y)
    return n, correct, abst

def main():
    os.makedirs(OUT, exist_ok=True)
    data = {s: load(s) for s in SETS}
    results = {}
    for kind in ["full", "no_caps", "no_boosters", "no_negation", "no_but", "no_punct", "no_idioms", "lexicon_only"]:
        an = ablate(kind)
        for s in SETS:
            comp = [an.polarity_scores(t)["compound"] for (_, _, t) in data[s]]
            if kind == "full":
                with open(os.path.join(OUT, s + "_vader332.tsv"), "w", encoding="utf-8") as f:
                    f.write("id\tgt_mean\tcompound\n")
                    for (i, gt, t), c in zip(data[s], comp):
                        f.write(f"{i}\t{gt}\t{c}\n")
                pear = pearson([g for _, g, _ in data[s]], comp)
                results[(s, "pearson")] = pear
            for flt in ("strict", "clear"):
                for band in (0.0, 0.05):
                    results[(s, kind, flt, band)] = metrics(data[s], comp, flt, band)
    for s in SETS:
        print(f"== {s}: {len(data[s])} items, Pearson r(full, gt) = {results[(s,'pearson')]:.4f}")
        for kind in ["full", "no_caps", "no_boosters", "no_negation", "no_but", "no_punct", "no_idioms", "lexicon_only"]:
            parts = []
            for flt in ("strict", "clear"):
                for band in (0.0, 0.05):
                    n, c, a = results[(s, kind, flt, band)]
                    parts.append(f"{flt}/b{band}: {c}/{n}={c/n:.4f} abst {a}, decided {c}/{n-a}={c/(n-a):.4f}")
            print(f"  {kind:13s} " + " | ".join(parts))

def pearson(x, y):
    n = len(x); mx = sum(x)/n; my = sum(y)/n
    sxy = sum((a-mx)*(b-my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a-mx)**2 for a in x)); sy = math.sqrt(sum((b-my)**2 for b in y))
    return sxy/(sx*sy)

main()
