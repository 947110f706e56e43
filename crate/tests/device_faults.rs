//! Device faults at run time on wgpu (lavapipe in CI): a device lost mid-run (here destroyed
//! through its own wgpu handle, as a driver reset or an unplugged GPU would lose it) ends the
//! run with a typed error naming the operation and its sizes, never a panic, and every
//! checkpoint written before it stays complete. Its own test binary: the lost device cannot be
//! used by any other test in the process.

mod common;

use common::fixtures;
use tunelab::device::{self, DeviceChoice};
use tunelab::hf::ModelSource;
use tunelab::run::{MethodKind, Run, RunSpec};
use tunelab::train::data::{self, DataOptions, Regime};
use tunelab::train::sink::{DirSink, checkpoint_dirs};
use tunelab::{Error, Session};

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
    let session = pollster::block_on(Session::load(
        &ModelSource::Dir(fixtures().join("gpt2")),
        selected.device.autodiff(),
        &mut |_| {},
    ))
    .unwrap();
    let opts = DataOptions {
        regime: Regime::Cpt,
        seq_len: 32,
        skip_bad_lines: false,
        pad_id: 0,
        chat_template: None,
    };
    let path = fixtures().join("data/tiny.txt");
    let train = data::load(&path, session.tokenizer().unwrap(), &opts, &mut |_| {}).unwrap();
    let spec = RunSpec {
        method: MethodKind::Full,
        lr: Some(1e-3),
        batch_size: 2,
        seq_len: 32,
        max_steps: Some(12),
        save_every: Some(2),
        log_every: 1,
        ..RunSpec::default()
    };
    let mut run = Run::new(&session, &spec, train, None, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(out.path());
    pollster::block_on(run.train_until(Some(4), &mut sink, &mut |_| {})).unwrap();

    wgpu.device.destroy();
    let err = pollster::block_on(run.train_until(None, &mut sink, &mut |_| {}))
        .expect_err("training went on on a destroyed device");
    let Error::DeviceFault { operation, message } = &err else {
        panic!("not a device fault: {err:?}")
    };
    assert!(
        operation.contains("training step 5") && operation.contains("batch 2 × 32 tokens"),
        "{err}"
    );
    assert!(
        message.contains("poisoned") && !message.contains("Backtrace"),
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
