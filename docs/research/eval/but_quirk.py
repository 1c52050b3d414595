import sys, os, json, importlib
import vaderSentiment.vaderSentiment as V
sys.path.insert(0, os.path.dirname(__file__))
D = sys.argv[1]; U = sys.argv[2]
texts = []
for s in ["tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"]:
    for line in open(os.path.join(D, s + "_GroundTruth.txt"), encoding="utf-8-sig", newline="").read().split("\r\n"):
        if line: texts.append(line.split("\t", 2)[2])
for n in ("amazon", "imdb", "yelp"):
    texts += [x["text"] for x in json.load(open(os.path.join(U, n + ".json"))) if x.get("class") in (0, 1)]
a = V.SentimentIntensityAnalyzer()
ref = [a.polarity_scores(t)["compound"] for t in texts]
def clean(words, sentiments):
    wl = [str(w).lower() for w in words]
    if "but" in wl:
        bi = wl.index("but")
        return [s * 0.5 if i < bi else s * 1.5 if i > bi else s for i, s in enumerate(sentiments)]
    return sentiments
V.SentimentIntensityAnalyzer._but_check = staticmethod(clean)
b = V.SentimentIntensityAnalyzer()
alt = [b.polarity_scores(t)["compound"] for t in texts]
diff = [(t, r, x) for t, r, x in zip(texts, ref, alt) if r != x]
print("texts", len(texts), "compound differs with positional but-check:", len(diff), "sign flips:", sum((r > 0) != (x > 0) or (r < 0) != (x < 0) for _, r, x in diff))
for t, r, x in diff[:3]: print(repr(t[:100]), r, x)
emo = a.emojis
print("emoji keys", len(emo), "single-codepoint", sum(len(k) == 1 for k in emo))
