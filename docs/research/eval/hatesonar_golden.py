# Golden probabilities of hatesonar 0.1.0's model.onnx under ONNX Runtime (CPU), for the Rust
# scorer in mesh/src/inference/classify/moderation.rs.
# Run: python3 -m venv /tmp/hs-venv && /tmp/hs-venv/bin/pip install onnxruntime onnx numpy
#      unzip hatesonar-0.1.0-py3-none-any.whl 'hatesonar/model/model.onnx' -d /tmp/hs
#      (ORT's StringNormalizer needs the en_US.UTF-8 locale: localedef -i en_US -f UTF-8 /tmp/hs/locale/en_US.UTF-8)
#      LOCPATH=/tmp/hs/locale /tmp/hs-venv/bin/python hatesonar_golden.py /tmp/hs/hatesonar/model/model.onnx tests/data/hatesonar_golden.json
import json, sys
import numpy as np
import onnxruntime as ort

LABELS = {0: "hate_speech", 1: "offensive_language", 2: "neither"}  # hatesonar/api.py's mapping
TEXTS = [
    "", "!!! ??? ... ,;:", "Have a nice day, see you at the game tonight.", "The Yankees won again, what a game!",
    "I love watching birds in the yard.", "you are so stupid", "You're such an ugly, stupid idiot.",
    "this is bullshit, damn", "shut up bitch", "I HATE YOU", "i hate you", "I Hate You", "I will kill you",
    "stop being a fat ugly loser", "That racist joke was not funny.", "Go back to your country, nobody wants you here",
    "128514 128514 8220 lol", "RT @some_user: yo what's good &#128514;&#128514;", "kieffer_jason __init__ snake_case_word",
    "café naïve résumé", "K\u0130LL", "\u212aill", "\u0130stanbul ist schön", "Ça va? ÖSTERREICH über alles",
    "😀😀😀 trash 😀", "你好世界 hello bird", "ｙｏｕ ｓｔｕｐｉｄ ｂｉｔｃｈ", "stupi\u0301d people", "bird\tbird\nbird\r\nbird",
    "YaNkEeS vs ReDsKiNs", "a b c d e", "wtf lmaooo gotta go", "Http://example.com/some_path?x=1&white=1",
    "hello\u0000world hate", "you stupid bitch " * 500, "the quick brown fox jumps over the lazy dog. " * 200,
]
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
items = []
for text in TEXTS:
    label, probs = sess.run(None, {"text": np.array([text], dtype=object)})
    items.append({"text": text, "probabilities": [float(probs[0][k]) for k in sorted(LABELS)]})
    print(LABELS[int(label[0])].ljust(18), [round(p, 4) for p in items[-1]["probabilities"]], repr(text[:50]))
json.dump({"labels": [LABELS[k] for k in sorted(LABELS)], "items": items}, open(sys.argv[2], "w", encoding="utf-8"),
          ensure_ascii=False, indent=1)
