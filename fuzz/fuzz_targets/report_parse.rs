//! Report::parse (a host report: untrusted, any host can write any) never
//! panics, and whatever it accepts round-trips.
#![no_main]

use abnix_formats::report::Report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = Report::parse(data) {
        let bytes = report.to_json();
        assert_eq!(Report::parse(&bytes).ok().as_ref(), Some(&report));
    }
});
