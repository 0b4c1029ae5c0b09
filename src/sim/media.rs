//! The files behind the emulator's output URLs (`/generations/{id}-{n}.{ext}`), of the kind the
//! job's family makes: PNG images of the size the request asked for (a deterministic pattern per
//! file), MP4 video with that frame size, MP3 and WAV audio, glTF binary 3D models. Or — as the
//! scenario says — missing, truncated, blank (images) or the wrong size (images, video), and slow.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Sim;
use super::api::finished_output;
use super::scenario::OutputFault;

/// The kinds of file the families make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    /// Images.
    Png,
    /// Video (v6 video, v7 video-fusion).
    Mp4,
    /// Speech and audio (v6 voice).
    Mp3,
    /// Speech (v7 voice).
    Wav,
    /// 3D models.
    Glb,
}

impl Media {
    pub(super) fn extension(self) -> &'static str {
        match self {
            Media::Png => "png",
            Media::Mp4 => "mp4",
            Media::Mp3 => "mp3",
            Media::Wav => "wav",
            Media::Glb => "glb",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Media::Png => "image/png",
            Media::Mp4 => "video/mp4",
            Media::Mp3 => "audio/mpeg",
            Media::Wav => "audio/wav",
            Media::Glb => "model/gltf-binary",
        }
    }

    /// What the API's messages call it.
    pub(super) fn noun(self) -> &'static str {
        match self {
            Media::Png => "image",
            Media::Mp4 => "video",
            Media::Mp3 | Media::Wav => "audio",
            Media::Glb => "3d model",
        }
    }

    /// The noun with its article.
    pub(super) fn a_noun(self) -> String {
        match self {
            Media::Png => "an image".into(),
            Media::Mp3 | Media::Wav => "any audio".into(),
            other => format!("a {}", other.noun()),
        }
    }

    /// The file: `w`×`h` where the kind has frames; `blank` only changes images.
    fn render(self, w: u32, h: u32, seed: u64, blank: bool) -> Vec<u8> {
        match self {
            Media::Png => image_png(w, h, seed, blank),
            Media::Mp4 => mp4(w, h, seed),
            Media::Mp3 => mp3(seed),
            Media::Wav => wav(seed),
            Media::Glb => glb(seed),
        }
    }
}

/// `GET /generations/{id}-{n}.{ext}`: the kind of file the job's family makes.
pub(super) async fn generated(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let Some((stem, ext)) = file.rsplit_once('.') else { return StatusCode::NOT_FOUND.into_response() };
    let Some((id, n)) = stem.split_once('-') else { return StatusCode::NOT_FOUND.into_response() };
    let (Ok(id), Ok(n)) = (id.parse::<u64>(), n.parse::<u64>()) else { return StatusCode::NOT_FOUND.into_response() };
    let Some((media, width, height)) = finished_output(&sim, id) else { return StatusCode::NOT_FOUND.into_response() };
    if media.extension() != ext {
        return StatusCode::NOT_FOUND.into_response();
    }
    let outputs = sim.scenario().outputs;
    // The same file always gets the same draw: a retried download sees the same fault.
    let mut rng = SmallRng::seed_from_u64(sim.scenario().seed ^ id.rotate_left(17) ^ n);
    let fault = outputs.pick(rng.random::<f64>());
    let (lo, hi) = (outputs.delay.min, outputs.delay.max);
    let delay = if hi > lo { rng.random_range(lo..hi) } else { lo };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (w, blank) = match fault {
        Some(OutputFault::Missing) => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
        Some(OutputFault::WrongSize) => ((width / 2).max(1), false),
        Some(OutputFault::Blank) => (width, true),
        _ => (width, false),
    };
    let mut file = media.render(w.max(1), height.max(1), id ^ n, blank);
    if fault == Some(OutputFault::Truncated) {
        file.truncate(file.len() / 2);
    }
    ([(header::CONTENT_TYPE, media.content_type()), (header::CACHE_CONTROL, "public, max-age=86400")], file)
        .into_response()
}

/// A box of ISO base media: size, type, payload.
fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&u32::try_from(payload.len() + 8).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(kind);
    v.extend_from_slice(payload);
    v
}

/// An MP4 of one `w`×`h` video track: `ftyp`, `moov` (`mvhd`, `trak`/`tkhd`), `mdat`. The sample
/// data is a pattern, not an encoded stream: what a player needs to open it, not to show it.
fn mp4(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let (timescale, duration) = (1000u32, 4000u32);
    let mut mvhd = vec![0u8; 100];
    mvhd[12..16].copy_from_slice(&timescale.to_be_bytes());
    mvhd[16..20].copy_from_slice(&duration.to_be_bytes());
    mvhd[20..24].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd[24..26].copy_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd[96..100].copy_from_slice(&2u32.to_be_bytes()); // next track id
    let mut tkhd = vec![0u8; 84];
    tkhd[3] = 0x03; // enabled, in movie
    tkhd[12..16].copy_from_slice(&1u32.to_be_bytes()); // track id
    tkhd[20..24].copy_from_slice(&duration.to_be_bytes());
    for (i, v) in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000].iter().enumerate() {
        tkhd[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_be_bytes()); // the identity matrix
    }
    tkhd[76..80].copy_from_slice(&(w.min(0xFFFF) << 16).to_be_bytes());
    tkhd[80..84].copy_from_slice(&(h.min(0xFFFF) << 16).to_be_bytes());
    let trak = mp4_box(b"trak", &mp4_box(b"tkhd", &tkhd));
    let moov = mp4_box(b"moov", &[mp4_box(b"mvhd", &mvhd), trak].concat());
    let mut rng = SmallRng::seed_from_u64(seed);
    let samples: Vec<u8> = (0..16_384).map(|_| rng.random()).collect();
    [mp4_box(b"ftyp", b"isom\0\0\x02\0isomiso2mp41"), moov, mp4_box(b"mdat", &samples)].concat()
}

/// An MP3 of about 1.3 s of silence: an ID3v2.4 tag with a title, then MPEG-1 Layer III frames
/// at 128 kbit/s, 44.1 kHz.
fn mp3(seed: u64) -> Vec<u8> {
    let title = format!("\x03sentinel emulator {seed}");
    let mut frame = b"TIT2".to_vec();
    frame.extend_from_slice(&u32::try_from(title.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(title.as_bytes());
    let mut v = b"ID3\x04\x00\x00".to_vec();
    let size = u32::try_from(frame.len()).unwrap_or(0);
    v.extend((0..4).rev().map(|i| ((size >> (7 * i)) & 0x7F) as u8)); // syncsafe
    v.extend_from_slice(&frame);
    for _ in 0..50 {
        let mut audio = vec![0u8; 417];
        audio[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        v.extend_from_slice(&audio);
    }
    v
}

/// A WAV of half a second of a tone, 16 kHz mono 16-bit PCM; the pitch depends on `seed`.
fn wav(seed: u64) -> Vec<u8> {
    let rate = 16_000u32;
    let pitch = 220.0 + (seed % 440) as f64;
    let data: Vec<u8> = (0..rate / 2)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(rate);
            (((t * pitch * std::f64::consts::TAU).sin() * 8_000.0) as i16).to_le_bytes()
        })
        .collect();
    let mut v = b"RIFF".to_vec();
    v.extend_from_slice(&u32::try_from(36 + data.len()).unwrap_or(0).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // PCM
    v.extend_from_slice(&1u16.to_le_bytes()); // mono
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes()); // bytes per second
    v.extend_from_slice(&2u16.to_le_bytes()); // block align
    v.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    v.extend_from_slice(b"data");
    v.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
    v.extend_from_slice(&data);
    v
}

/// A glTF 2.0 binary of one triangle (a mesh, a node, a scene); its height depends on `seed`.
fn glb(seed: u64) -> Vec<u8> {
    let top = 1.0f32 + (seed % 8) as f32 / 8.0;
    let positions: [f32; 9] = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, top, 0.0];
    let bin: Vec<u8> = positions.iter().flat_map(|p| p.to_le_bytes()).collect();
    let json = serde_json::json!({
        "asset": {"version": "2.0", "generator": "modelslab-sentinel emulator"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": bin.len()}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": bin.len()}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                       "min": [0.0, 0.0, 0.0], "max": [1.0, top, 0.0]}],
    });
    let mut json = json.to_string().into_bytes();
    while json.len() % 4 != 0 {
        json.push(b' ');
    }
    let total = 12 + 8 + json.len() + 8 + bin.len();
    let le = |n: usize| u32::try_from(n).unwrap_or(0).to_le_bytes();
    let mut v = b"glTF".to_vec();
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(&le(total));
    v.extend_from_slice(&le(json.len()));
    v.extend_from_slice(b"JSON");
    v.extend_from_slice(&json);
    v.extend_from_slice(&le(bin.len()));
    v.extend_from_slice(b"BIN\0");
    v.extend_from_slice(&bin);
    v
}

/// A PNG of `w`×`h`: diagonal bands and a gradient that depend on `seed`, or a black frame.
fn image_png(w: u32, h: u32, seed: u64, blank: bool) -> Vec<u8> {
    let (w, h) = (w.min(4096), h.min(4096));
    let tint = (seed % 200) as u8;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if blank {
            return image::Rgb([0, 0, 0]);
        }
        let band = (((x + y) / 16) % 2) as u8 * 60;
        image::Rgb([((x * 255) / w.max(1)) as u8, ((y * 255) / h.max(1)) as u8, tint.wrapping_add(band)])
    });
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory RGB image into a Vec cannot fail.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}
