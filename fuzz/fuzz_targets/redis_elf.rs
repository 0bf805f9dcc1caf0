//! A traced program's executable: whoever started redis-server chose the file. Its
//! symbols, stubs, version literal and DWARF are read, and addresses named.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::kernel::redis_elf::{Symbols, elf_version};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = object::File::parse(data) else {
        return;
    };
    let _ = elf_version(&file);
    let s = Symbols::of_file(&file, 0x5555_0000_0000, &["freeClient", "freeClientAsync"]);
    for a in [0, 0x5555_0000_1000, u64::MAX] {
        let _ = s.name(a);
        let _ = s.keeps_frame_pointer(a);
    }
});
