//! Device faults at run time on wgpu (lavapipe in CI): a device lost mid-run (here destroyed
//! through its own wgpu handle, as a driver reset or an unplugged GPU would lose it) and an
//! allocation the device refuses (a device opened with a 1 MiB buffer limit, given a batch
//! whose activations need more) end the run with a typed error naming the operation and its
//! sizes, never a panic, and every checkpoint written before stays complete. Its own test
//! binary: a broken device cannot be used by any other test in the process.

mod common;

use common::fixtures;
use tunelab::device::{self, DeviceChoice};
use tunelab::hf::ModelSource;
use tunelab::run::{MethodKind, Run, RunSpec};
use tunelab::train::sink::{DirSink, checkpoint_dirs};
use tunelab::{Error, Session};

/// Full fine-tuning of the tiny GPT-2 on `device` over the tiny text, 32 tokens a row, with
/// `spec`'s batch and budget.
fn full_run(device: &burn::tensor::Device, spec: RunSpec) -> Run {
    let session = pollster::block_on(Session::load(
        &ModelSource::Dir(fixtures().join("gpt2")),
        device.clone().autodiff(),
        &mut |_| {},
    ))
    .unwrap();
    let train = common::tiny_text(session.tokenizer().unwrap(), 32);
    let spec = RunSpec {
        method: MethodKind::Full,
        lr: Some(1e-3),
        seq_len: 32,
        log_every: 1,
        ..spec
    };
    Run::new(&session, &spec, train, None, None).unwrap()
}

/// The operation and message of a device fault; any other error fails the test.
fn fault(err: &Error) -> (&str, &str) {
    match err {
        Error::DeviceFault { operation, message } => (operation, message),
        _ => panic!("not a device fault: {err:?}"),
    }
}

#[test]
fn a_lost_device_ends_the_run_with_a_typed_error_and_keeps_the_checkpoints() {
    let selected = match device::select(DeviceChoice::Gpu) {
        Ok(s) => s,
        Err(e) if std::env::var("TUNELAB_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("TUNELAB_REQUIRE_GPU=1 but no wgpu adapter: {e}")
        }
        Err(e) => {
            eprintln!("no wgpu adapter, skipped: {e}");
            return;
        }
    };
    let wgpu = selected.wgpu.clone().expect("a wgpu adapter was chosen");
    let mut run = full_run(
        &selected.device,
        RunSpec {
            batch_size: 2,
            max_steps: Some(12),
            save_every: Some(2),
            ..RunSpec::default()
        },
    );
    let out = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(out.path());
    pollster::block_on(run.train_until(Some(4), &mut sink, &mut |_| {})).unwrap();

    wgpu.device.destroy();
    // A lost device reaches the engine through wgpu's device-lost callback, which a destroyed
    // device delivers at its next poll (a real loss delivers it as it happens); before it, any
    // error on the device's buffers is taken for a validation bug and panics.
    let _ = wgpu
        .device
        .poll(burn::tensor::wgpu::wgpu::PollType::wait_indefinitely());
    let err = pollster::block_on(run.train_until(None, &mut sink, &mut |_| {}))
        .expect_err("training went on on a destroyed device");
    let (operation, message) = fault(&err);
    assert!(
        operation.contains("training step 5") && operation.contains("batch 2 × 32 tokens"),
        "{err}"
    );
    assert!(
        message.contains("poisoned") && !message.contains("acktrace"),
        "{err}"
    );
    eprintln!("{err}");
    // What was saved before the fault is complete and still there.
    let kept: Vec<usize> = checkpoint_dirs(out.path()).iter().map(|c| c.0).collect();
    assert_eq!(kept, [2, 4]);
    for (_, dir) in checkpoint_dirs(out.path()) {
        assert!(tunelab::files::verify_dir(&dir).unwrap());
    }
}

/// A device on the first software or hardware wgpu adapter whose buffers may not exceed
/// `max_buffer` bytes, registered with burn as its own runtime.
fn device_limited_to(max_buffer: u64) -> Option<burn::tensor::Device> {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .into_iter()
        .next()?;
    let limits = wgpu::Limits {
        max_buffer_size: max_buffer,
        max_storage_buffer_binding_size: max_buffer,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            label: None,
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: limits,
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
        }),
    )
    .ok()?;
    let backend = adapter.get_info().backend;
    let setup = WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    };
    Some(
        burn::tensor::Device::wgpu_options()
            .setup(setup)
            .init()
            .unwrap(),
    )
}

#[test]
fn an_allocation_the_device_refuses_ends_the_run_with_a_typed_error() {
    let Some(device) = device_limited_to(1 << 20) else {
        assert!(
            std::env::var("TUNELAB_REQUIRE_GPU").as_deref() != Ok("1"),
            "TUNELAB_REQUIRE_GPU=1 but no wgpu adapter"
        );
        return;
    };
    // The model's largest tensor is 128 KiB; a batch of 48 × 32 tokens has 3 MiB of logits.
    let mut run = full_run(
        &device,
        RunSpec {
            batch_size: 48,
            max_steps: Some(4),
            ..RunSpec::default()
        },
    );
    let out = tempfile::tempdir().unwrap();
    let err = pollster::block_on(run.train_until(None, &mut DirSink::new(out.path()), &mut |_| {}))
        .expect_err("a batch larger than the device's buffers trained");
    eprintln!("{err}");
    let (operation, message) = fault(&err);
    assert!(
        operation.contains("training step 1") && operation.contains("batch 48"),
        "{err}"
    );
    assert!(
        message.contains("allocated") && !message.contains("backtrace"),
        "{err}"
    );
}
