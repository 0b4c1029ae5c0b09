//! The files behind the emulator's output URLs (`/generations/{id}-{n}.png`): real PNG images of
//! the size the request asked for, a deterministic pattern per file, or — as the scenario says —
//! missing, truncated, blank or the wrong size, and slow.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Sim;
use super::api::finished_image;
use super::scenario::OutputFault;

/// `GET /generations/{id}-{n}.png`.
pub(super) async fn generated(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let Some((id, n)) = file.strip_suffix(".png").and_then(|f| f.split_once('-')) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (Ok(id), Ok(n)) = (id.parse::<u64>(), n.parse::<u64>()) else { return StatusCode::NOT_FOUND.into_response() };
    let Some((width, height)) = finished_image(&sim, id) else { return StatusCode::NOT_FOUND.into_response() };
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
    let mut png = image_png(w, height.max(1), id ^ n, blank);
    if fault == Some(OutputFault::Truncated) {
        png.truncate(png.len() / 2);
    }
    ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "public, max-age=86400")], png).into_response()
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
