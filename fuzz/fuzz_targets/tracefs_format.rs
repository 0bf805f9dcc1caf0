//! A tracefs `format` file (/sys/kernel/tracing/events/<cat>/<name>/format): parsed, then
//! everything the capture derives from it (fields, the `__print_symbolic` tables, the
//! probe layouts handed to the kernel programs, the reset reason names).
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::kernel::layout;
use redis_trace::kernel::tracefs::parse_format;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(f) = parse_format(&text) else {
        return;
    };
    for field in &f.fields {
        assert!(f.field(&field.name).is_some());
        let _ = f.symbolic(&field.name);
    }
    let _ = f.own_fields().count();
    for name in [
        "reason", "state", "oldstate", "newstate", "protocol", "family",
    ] {
        let _ = f.symbolic(name);
    }
    let _ = layout::set_state(&f);
    let _ = layout::reset(&f);
    let _ = layout::error_report(&f);
    let _ = layout::oom(&f);
    let _ = layout::signal(&f);
    let _ = layout::exit(&f);
    let reasons = layout::ResetReasons::from_format(&f);
    let _ = reasons.task_mask();
    for (n, _) in &reasons.0 {
        assert!(reasons.name(*n).is_some());
    }
});
