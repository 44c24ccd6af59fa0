// NV12 -> XRGB8888, ITU-R BT.601 limited range, 8-bit integer inverse (the same formulas as
// devmmu_tools::sensor::convert: C = Y - 16, D = Cb - 128, E = Cr - 128,
// R = clamp((298 C + 409 E + 128) >> 8), G = clamp((298 C - 100 D - 208 E + 128) >> 8),
// B = clamp((298 C + 516 D + 128) >> 8)), nearest-neighbour chroma. One invocation per pixel.
// Both buffers are whole BOs seen as arrays of little-endian 32-bit words; offsets and strides
// are in bytes. X is written as 0xff.

struct Params {
    width: u32,
    height: u32,
    y_offset: u32,
    y_stride: u32,
    c_offset: u32,
    c_stride: u32,
    out_offset: u32,
    out_stride: u32,
}

var<push_constant> p: Params;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

fn byte_at(i: u32) -> i32 {
    return i32((src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu);
}

fn channel(v: i32) -> u32 {
    return u32(clamp(v >> 8u, 0, 255));
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= p.width || id.y >= p.height) {
        return;
    }
    let c = byte_at(p.y_offset + id.y * p.y_stride + id.x) - 16;
    let ci = p.c_offset + (id.y / 2u) * p.c_stride + (id.x / 2u) * 2u;
    let d = byte_at(ci) - 128;
    let e = byte_at(ci + 1u) - 128;
    let r = channel(298 * c + 409 * e + 128);
    let g = channel(298 * c - 100 * d - 208 * e + 128);
    let b = channel(298 * c + 516 * d + 128);
    dst[(p.out_offset + id.y * p.out_stride) / 4u + id.x] = 0xff000000u | (r << 16u) | (g << 8u) | b;
}
