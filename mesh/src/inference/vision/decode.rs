//! Images as clients send them: PNG or JPEG files, whose dimensions are read from the header
//! and checked before anything is decoded, so a small file that would decode into gigabytes
//! (a "decompression bomb") costs nothing.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

/// Most pixels an image may have: 16 megapixels (4,096 × 4,096), well above what OCR or a
/// 224-pixel classifier can use.
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;
/// Longest side an image may have, in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not a PNG or JPEG file, or not one that decodes.
    #[error("not a PNG or JPEG image: {0}")]
    NotAnImage(String),
    /// Too many pixels.
    #[error(
        "an image of {width} x {height} pixels exceeds the limit of {MAX_PIXELS} pixels and {MAX_SIDE} a side"
    )]
    TooLarge {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
}

/// An image decoded to 8-bit RGB, row-major.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::NotAnImage(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => Ok(reader),
        Some(other) => Err(ImageError::NotAnImage(format!(
            "{other:?} images are not accepted"
        ))),
        None => Err(ImageError::NotAnImage("unknown format".into())),
    }
}

/// Most memory reading a header may take (a PNG's compressed ICC profile or text chunks are
/// inflated while its header is read): a real profile is a few hundred KiB.
const HEADER_ALLOC: u64 = 8 * 1024 * 1024;

/// The image's dimensions, from its header alone, checked against the limits.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let mut reader = reader(bytes)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(HEADER_ALLOC);
    reader.limits(limits);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageError::NotAnImage(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(ImageError::NotAnImage("the image has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok((width, height))
}

/// Decodes the image to RGB, after [`dimensions`] accepted it; the decoder is held to the same
/// limits (and to the memory they imply), whatever the header said. A photo is turned as its
/// EXIF orientation says, and transparent pixels are laid on white (black text on a clear
/// background stays readable).
pub fn rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    dimensions(bytes)?;
    let mut reader = reader(bytes)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // RGBA at 16 bits a channel, the widest a PNG decodes to, plus room for the decoder.
    limits.max_alloc = Some(MAX_PIXELS * 8 + 64 * 1024 * 1024);
    reader.limits(limits);
    let failed = |e: image::ImageError| ImageError::NotAnImage(e.to_string());
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let orientation = image::ImageDecoder::orientation(&mut decoder).map_err(failed)?;
    let mut image = image::DynamicImage::from_decoder(decoder).map_err(failed)?;
    image.apply_orientation(orientation);
    let image = if image.color().has_alpha() {
        let mut rgba = image.into_rgba8();
        for pixel in rgba.pixels_mut() {
            let [r, g, b, a] = pixel.0;
            let over_white = |c: u8| {
                let (c, a) = (u16::from(c), u16::from(a));
                // c·a + 255·(255 − a), over 255: at most 255.
                u8::try_from((c * a + 255 * (255 - a)) / 255).unwrap_or(u8::MAX)
            };
            pixel.0 = [over_white(r), over_white(g), over_white(b), 255];
        }
        image::DynamicImage::ImageRgba8(rgba).into_rgb8()
    } else {
        image.into_rgb8()
    };
    Ok(RgbImage {
        width: image.width(),
        height: image.height(),
        pixels: image.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::GrayImage::new(width, height);
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encodes");
        bytes
    }

    #[test]
    fn a_png_decodes_to_rgb_and_its_size_is_read_from_the_header() {
        let bytes = png(7, 5);
        assert_eq!(dimensions(&bytes), Ok((7, 5)));
        let image = rgb(&bytes).expect("decodes");
        assert_eq!((image.width, image.height), (7, 5));
        assert_eq!(image.pixels.len(), 7 * 5 * 3);
    }

    #[test]
    fn clear_pixels_are_laid_on_white() {
        let mut image = image::RgbaImage::new(2, 1);
        image.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encodes");
        let decoded = rgb(&bytes).expect("decodes");
        assert_eq!(decoded.pixels, vec![255, 255, 255, 0, 0, 0]);
    }

    #[test]
    fn too_many_pixels_are_refused_before_decoding_and_other_bytes_are_not_images() {
        assert!(matches!(
            dimensions(&png(MAX_SIDE + 1, 1)),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            rgb(&png(4097, 4097)),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            dimensions(b"GIF89a..."),
            Err(ImageError::NotAnImage(_))
        ));
        assert!(matches!(
            rgb(b"\x89PNG\r\n\x1a\ncut short"),
            Err(ImageError::NotAnImage(_))
        ));
    }
}
