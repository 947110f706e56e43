// RMSNorm's weight gradient, first stage: partial[c, j] = Σ over the rows of chunk c of
// dy[r, j] · x[r, j] / rms[r] (the normalised input), 64 columns × 4 row lanes a workgroup; the
// caller sums the chunks (one more launch when there is more than one). Chunks of rows keep
// enough workgroups in flight where H alone gives few.
//
// x/dy [rows, H], rms [rows], partial [chunks, H]. Grid: (⌈H / 64⌉, chunks).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rms: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

struct Params { rows: u32, h: u32, chunk_rows: u32, pad0: u32 }
@group(0) @binding(4) var<uniform> p: Params;

const COLS: u32 = 64u;
const LANES: u32 = 4u;
var<workgroup> lanes: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let col = wg.x * COLS + li % COLS;
    let lane = li / COLS;
    let first = wg.y * p.chunk_rows;
    let last = min(first + p.chunk_rows, p.rows);
    var s = 0.0;
    if (col < p.h) {
        for (var r = first + lane; r < last; r += LANES) {
            s += dy[r * p.h + col] * (x[r * p.h + col] / rms[r]);
        }
    }
    lanes[li] = s;
    workgroupBarrier();
    if (lane == 0u && col < p.h) {
        partial[wg.y * p.h + col] = lanes[li] + lanes[li + COLS] + lanes[li + 2u * COLS] + lanes[li + 3u * COLS];
    }
}
