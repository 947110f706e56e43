// Copies up to SLOTS flat f32 tensors into one flat buffer, each at its offset, zero-filling its
// segment past its length up to its padded length: the layout of the multi-tensor optimizer,
// whose segments start at multiples of the storage-offset alignment so that slicing the updated
// buffer back into tensors can give views of it, not copies. Several launches fill one buffer (a
// shader can bind only so many tensors; WebGPU guarantees 8 storage buffers), each writing its
// own segments of `out` and leaving the rest as it is.
//
// Template: slots (SLOTS, 1 to 6), inputs (the SLOTS `in{i}` bindings 1.., declared read_write
// as every binding here: the runtime suballocates tensors from shared buffers, and WebGPU forbids
// one buffer bound read-only and read-write in a dispatch, or one range bound writable twice),
// cases (the switch arms reading `in{i}`), uniform (the binding of p: SLOTS + 1).
// Grid: x over ceil(longest padded length / 256), y = slot.

struct Slot {
    // Where the segment starts in `out`, the tensor's length, the segment's length.
    offset: u32,
    len: u32,
    padded: u32,
    pad: u32,
}

struct Params {
    slots: array<Slot, {{ slots }}>,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
{{ inputs }}
@group(0) @binding({{ uniform }}) var<uniform> p: Params;

fn load(slot: u32, i: u32) -> f32 {
    var x = 0.0;
    switch slot {
        {{ cases }}
        default: {}
    }
    return x;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let s = p.slots[wg.y];
    let i = wg.x * 256u + li;
    if (i >= s.padded) {
        return;
    }
    var x = 0.0;
    if (i < s.len) {
        x = load(wg.y, i);
    }
    out[s.offset + i] = x;
}
