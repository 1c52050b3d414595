//! Recordings as clients send them: WAV files (PCM 8/16/24/32-bit integer or 32-bit float, 1 to
//! 8 channels, 8 kHz to 192 kHz), checked from their header before any work ([`duration`]) and
//! decoded to what the speech models take: mono 16 kHz f32 in -1..1 ([`samples_16k`]).
//!
//! A header can lie about its length, so nothing is allocated by what it claims: the claim is
//! checked against [`MAX_SECONDS`] and against the bytes actually present first.
//!
//! Resampling is windowed-sinc (Blackman window, 16 zero crossings each side at the lower of the
//! two rates, the cut-off at that rate's Nyquist frequency): a low-pass filter, so downsampling
//! (e.g. 44.1 kHz to 16 kHz) does not fold high frequencies into the speech band as linear
//! interpolation would. The kernel is tabulated once and interpolated, so the cost is bounded by
//! output samples × taps (at most 2 × 16 × 12 = 384 taps, from 192 kHz).

use std::io::Cursor;

/// Longest recording a request may carry, in seconds.
pub const MAX_SECONDS: f64 = 60.0;

/// The sample rate the speech models take.
pub const RATE: u32 = 16_000;

/// Zero crossings of the resampling kernel on each side of its centre (at the lower rate).
const LOBES: usize = 16;

/// Kernel table entries per zero crossing (linear interpolation between them).
const TABLE_RESOLUTION: usize = 256;

/// Sample rates accepted, in Hz.
const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// Channel counts accepted.
const CHANNELS: std::ops::RangeInclusive<u16> = 1..=8;

/// Why a recording is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    /// Not a WAV file this module reads (or a damaged one).
    #[error("not a WAV file: {0}")]
    NotAudio(String),
    /// Longer than [`MAX_SECONDS`], by its header's claim.
    #[error("a recording of {seconds:.0} s exceeds the limit of {MAX_SECONDS} s")]
    TooLong {
        /// Its length, as its header claims.
        seconds: f64,
    },
    /// No samples.
    #[error("the recording is empty")]
    Empty,
}

/// What the header says, checked: the format, and where the data lies.
struct Header {
    spec: hound::WavSpec,
    /// Frames (one sample of every channel) the data chunk holds.
    frames: usize,
}

/// Reads and checks the header: format, length within [`MAX_SECONDS`], and the data present.
fn header(bytes: &[u8]) -> Result<Header, AudioError> {
    let mut cursor = Cursor::new(bytes);
    // Reads up to the data chunk and no further: skipping other chunks goes through a fixed
    // buffer, so a lying chunk size costs nothing but an error.
    let reader =
        hound::WavReader::new(&mut cursor).map_err(|e| AudioError::NotAudio(e.to_string()))?;
    let spec = reader.spec();
    let samples = usize::try_from(reader.len()).unwrap_or(usize::MAX);
    // The cursor is at the data's first byte, just after the chunk's claimed size (hound checked
    // that the size is a whole number of samples of every channel).
    let start = usize::try_from(reader.into_inner().position()).unwrap_or(usize::MAX);
    let data_len = start
        .checked_sub(4)
        .and_then(|at| bytes.get(at..start))
        .and_then(|size| <[u8; 4]>::try_from(size).ok())
        .map(u32::from_le_bytes)
        .and_then(|size| usize::try_from(size).ok())
        .ok_or_else(|| AudioError::NotAudio("no data chunk".into()))?;
    if samples == 0 {
        return Err(AudioError::Empty);
    }
    // 24-bit samples may sit in 3 or 4 bytes: the data's size says which.
    let bytes_per_sample = data_len / samples;
    let supported = match spec.sample_format {
        hound::SampleFormat::Int => matches!(
            (bytes_per_sample, spec.bits_per_sample),
            (1, 8) | (2, 16) | (3, 24) | (4, 24) | (4, 32)
        ),
        hound::SampleFormat::Float => (bytes_per_sample, spec.bits_per_sample) == (4, 32),
    };
    if !supported {
        return Err(AudioError::NotAudio(format!(
            "{}-bit {:?} samples in {bytes_per_sample} bytes are not supported",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    if !CHANNELS.contains(&spec.channels) {
        return Err(AudioError::NotAudio(format!(
            "{} channels (1 to 8 are supported)",
            spec.channels
        )));
    }
    if !RATES.contains(&spec.sample_rate) {
        return Err(AudioError::NotAudio(format!(
            "a sample rate of {} Hz (8 kHz to 192 kHz are supported)",
            spec.sample_rate
        )));
    }
    let frames = samples / usize::from(spec.channels);
    // The claim first: a header saying two hours is refused as too long whatever follows it.
    let seconds = frames as f64 / f64::from(spec.sample_rate);
    if seconds > MAX_SECONDS {
        return Err(AudioError::TooLong { seconds });
    }
    let present = bytes.len().saturating_sub(start);
    if data_len > present {
        return Err(AudioError::NotAudio(format!(
            "the data chunk claims {data_len} bytes but the file holds {present}"
        )));
    }
    Ok(Header { spec, frames })
}

/// The recording's length in seconds, from its header alone (a WAV file: RIFF/WAVE, PCM
/// 8/16/24/32-bit int or 32-bit float, 1 to 8 channels, 8 kHz to 192 kHz), checked against
/// [`MAX_SECONDS`] and against the bytes present.
pub fn duration(bytes: &[u8]) -> Result<f64, AudioError> {
    let header = header(bytes)?;
    Ok(header.frames as f64 / f64::from(header.spec.sample_rate))
}

/// Decodes the recording to mono 16 kHz f32 samples in -1..1 (channels averaged, resampled
/// with a windowed sinc), after [`duration`]'s checks (which it repeats).
pub fn samples_16k(bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
    let header = header(bytes)?;
    let channels = usize::from(header.spec.channels);
    let mut reader = hound::WavReader::new(Cursor::new(bytes))
        .map_err(|e| AudioError::NotAudio(e.to_string()))?;
    // `header` checked that the data is present, so this is bounded by the file's size.
    let mut mono = Vec::with_capacity(header.frames);
    let mut frame = 0.0_f32;
    let mut in_frame = 0;
    let mut push = |value: f32| {
        // Floats may hold anything (NaN, 1e30): keep the model's input sane.
        frame += if value.is_finite() {
            value.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        in_frame += 1;
        if in_frame == channels {
            mono.push(frame / channels as f32);
            frame = 0.0;
            in_frame = 0;
        }
    };
    let broken = |e: hound::Error| AudioError::NotAudio(e.to_string());
    match header.spec.sample_format {
        hound::SampleFormat::Float => {
            for sample in reader.samples::<f32>().take(header.frames * channels) {
                push(sample.map_err(broken)?);
            }
        }
        hound::SampleFormat::Int => {
            // Full scale of a signed sample of this width: 2^(bits - 1).
            let scale = (1_u64 << (header.spec.bits_per_sample - 1)) as f32;
            for sample in reader.samples::<i32>().take(header.frames * channels) {
                push(sample.map_err(broken)? as f32 / scale);
            }
        }
    }
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(resample(&mono, header.spec.sample_rate, RATE))
}

/// Resamples `input` from `from` Hz to `to` Hz with a windowed-sinc low-pass at the lower rate's
/// Nyquist frequency; the output has `round(len × to / from)` samples. Unchanged when the rates
/// are equal.
pub(crate) fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let (from_f, to_f) = (f64::from(from), f64::from(to));
    // At least one sample for any input (a frame or two at 192 kHz rounds to none).
    let outputs = ((input.len() as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from))
        .max(u64::from(!input.is_empty()));
    // The kernel in input samples: sinc(scale × x), zero crossings every 1 / scale samples.
    let scale = (to_f / from_f).min(1.0);
    let half_width = LOBES as f64 / scale;
    let table = kernel_table();
    let last = input.len() - 1;
    (0..outputs)
        .map(|n| {
            let centre = n as f64 * from_f / to_f;
            let first = (centre - half_width).ceil().max(0.0) as usize;
            let end = ((centre + half_width).floor() as usize).min(last);
            let (mut sum, mut weights) = (0.0_f64, 0.0_f64);
            let taps = input.get(first..=end).unwrap_or(&[]);
            for (i, sample) in (first..).zip(taps) {
                let weight = kernel(&table, (centre - i as f64).abs() * scale);
                sum += f64::from(*sample) * weight;
                weights += weight;
            }
            // Dividing by the weights keeps unit gain at the edges, where the kernel is cut.
            if weights > 1e-9 {
                (sum / weights) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// The kernel sinc(u) × Blackman(u / LOBES) for u in 0..=LOBES, at TABLE_RESOLUTION steps per unit.
fn kernel_table() -> Vec<f64> {
    let size = LOBES * TABLE_RESOLUTION + 1;
    (0..size)
        .map(|k| {
            let u = k as f64 / TABLE_RESOLUTION as f64;
            let sinc = if k == 0 {
                1.0
            } else {
                (std::f64::consts::PI * u).sin() / (std::f64::consts::PI * u)
            };
            // Blackman over -LOBES..LOBES, evaluated at u (its centre at 0).
            let phase = std::f64::consts::PI * (u / LOBES as f64 + 1.0);
            let window = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
            sinc * window
        })
        .collect()
}

/// The kernel at `u` zero crossings from its centre (zero beyond LOBES), interpolated.
fn kernel(table: &[f64], u: f64) -> f64 {
    let position = u * TABLE_RESOLUTION as f64;
    let index = position.floor() as usize;
    match (table.get(index), table.get(index + 1)) {
        (Some(a), Some(b)) => {
            let t = position - index as f64;
            a + (b - a) * t
        }
        (Some(a), None) => *a,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV file in memory: `frames` frames of a 440 Hz tone on every channel.
    fn wav(spec: hound::WavSpec, frames: usize) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for i in 0..frames {
            let t = i as f64 / f64::from(spec.sample_rate);
            let value = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.5;
            for _ in 0..spec.channels {
                match spec.sample_format {
                    hound::SampleFormat::Int => writer.write_sample((value * 32767.0) as i16),
                    hound::SampleFormat::Float => writer.write_sample(value as f32),
                }
                .unwrap();
            }
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    fn spec(channels: u16, sample_rate: u32) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    /// Offset of the data chunk's size field in a 16-bit mono or stereo file `wav` wrote (RIFF,
    /// WAVE, a 16-byte fmt chunk, data).
    const DATA_SIZE_AT: usize = 40;

    /// Sets the data chunk's claimed size.
    fn claim(bytes: &mut [u8], size: u32) {
        assert_eq!(&bytes[DATA_SIZE_AT - 4..DATA_SIZE_AT], b"data");
        bytes[DATA_SIZE_AT..DATA_SIZE_AT + 4].copy_from_slice(&size.to_le_bytes());
    }

    #[test]
    fn stereo_44k_decodes_to_16k_mono() {
        let bytes = wav(spec(2, 44_100), 44_100);
        assert!((duration(&bytes).unwrap() - 1.0).abs() < 1e-9);
        let samples = samples_16k(&bytes).unwrap();
        assert_eq!(samples.len(), 16_000);
        // The tone survives at its amplitude (0.5), within the filter's ripple.
        let peak = samples[1_000..15_000]
            .iter()
            .fold(0.0_f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
        // 0.3 s at 44.1 kHz: 13,230 frames to 4,800 samples.
        let bytes = wav(spec(2, 44_100), 13_230);
        assert_eq!(samples_16k(&bytes).unwrap().len(), 4_800);
    }

    #[test]
    fn other_formats_decode() {
        let float = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let samples = samples_16k(&wav(float, 4_000)).unwrap();
        assert_eq!(samples.len(), 8_000);
        // Away from the cut edges, the tone keeps its amplitude (0.5).
        let peak = samples[100..7_900]
            .iter()
            .fold(0.0_f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
        // 16 kHz passes through unchanged.
        let bytes = wav(spec(1, 16_000), 1_600);
        assert_eq!(samples_16k(&bytes).unwrap().len(), 1_600);
    }

    #[test]
    fn a_header_claiming_two_hours_is_too_long() {
        let mut bytes = wav(spec(1, 16_000), 160);
        let two_hours = 2 * 3_600 * 16_000 * 2_u32;
        claim(&mut bytes, two_hours);
        assert!(
            matches!(duration(&bytes), Err(AudioError::TooLong { seconds }) if seconds == 7_200.0)
        );
        assert!(matches!(
            samples_16k(&bytes),
            Err(AudioError::TooLong { .. })
        ));
        // The streaming writers' "unknown length" is refused too (as not a whole number of
        // 16-bit samples, before its length is read).
        claim(&mut bytes, u32::MAX);
        assert!(duration(&bytes).is_err());
        assert!(samples_16k(&bytes).is_err());
    }

    #[test]
    fn a_header_claiming_more_than_present_is_refused() {
        let bytes = wav(spec(1, 16_000), 16_000);
        // Cut the file: the header still claims one second.
        let cut = &bytes[..bytes.len() - 1_000];
        assert!(matches!(duration(cut), Err(AudioError::NotAudio(m)) if m.contains("claims")));
        assert!(matches!(samples_16k(cut), Err(AudioError::NotAudio(_))));
        // Or claim more than was written.
        let mut bytes = wav(spec(1, 16_000), 16_000);
        claim(&mut bytes, 64_000);
        assert!(matches!(duration(&bytes), Err(AudioError::NotAudio(_))));
    }

    #[test]
    fn not_wav_is_refused() {
        for bytes in [
            &b""[..],
            b"RIFF",
            b"hello, this is not a recording at all",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        ] {
            assert!(
                matches!(duration(bytes), Err(AudioError::NotAudio(_))),
                "{bytes:?}"
            );
            assert!(matches!(samples_16k(bytes), Err(AudioError::NotAudio(_))));
        }
        let message = duration(b"nope").unwrap_err().to_string();
        assert!(message.starts_with("not a WAV file: "), "{message}");
    }

    #[test]
    fn empty_and_unsupported_are_refused() {
        assert_eq!(duration(&wav(spec(1, 16_000), 0)), Err(AudioError::Empty));
        assert!(matches!(
            duration(&wav(spec(1, 4_000), 100)),
            Err(AudioError::NotAudio(_))
        ));
        assert!(matches!(
            duration(&wav(spec(9, 16_000), 100)),
            Err(AudioError::NotAudio(_))
        ));
    }

    #[test]
    fn damaged_headers_are_refused_without_panicking() {
        let clean = wav(spec(2, 22_050), 300);
        // A fixed linear congruential generator: the same damage on every run.
        let mut state = 0x2545_f491_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        for _ in 0..3_000 {
            let mut bytes = clean.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() % 48;
                bytes[at] = next() as u8;
            }
            let cut = bytes.len() - next() % 64;
            let bytes = &bytes[..cut];
            if let Ok(seconds) = duration(bytes) {
                assert!(seconds > 0.0 && seconds <= MAX_SECONDS);
                let samples = samples_16k(bytes).unwrap();
                assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
            }
        }
    }
}
