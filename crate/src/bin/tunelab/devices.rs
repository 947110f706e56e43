//! `tunelab devices`: the wgpu adapters and their limits.

use crate::output::print_json;
use crate::{Global, Result};

pub fn run(g: &Global) -> Result {
    let list = tunelab::device::adapters();
    if g.json {
        print_json(&list);
        return Ok(());
    }
    if list.is_empty() {
        println!("no wgpu adapters (the CPU backend is always available)");
    }
    for (i, a) in list.iter().enumerate() {
        println!(
            "{i}: {} [{} {}{}] driver: {}",
            a.name,
            a.backend,
            a.device_type,
            if a.software { ", software" } else { "" },
            a.driver
        );
        println!(
            "   max_buffer_size {} MiB, max_storage_buffer_binding_size {} MiB, workgroup storage {} KiB, invocations {}, shader f16 {}",
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            if a.shader_f16 {
                "yes (--frozen-f16)"
            } else {
                "no"
            }
        );
    }
    println!("cpu: burn flex backend (always available)");
    Ok(())
}
