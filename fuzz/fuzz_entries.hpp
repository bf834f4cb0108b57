#pragma once
// The entry points shared by the libFuzzer targets (fuzz/*_fuzzer.cpp) and the regression test
// (tests/unit/test_fuzz_regressions.cpp): each feeds one untrusted input to one parser the way the engine does.
// Bad input must surface as m2h::Error and nothing else; anything else (another exception type, a crash, a
// sanitizer report, a huge allocation, a hang) is a bug. The invariant checks below call std::abort() when a
// parser accepts something it has promised to refuse.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace m2h::fuzz {

using Input = std::span<const std::uint8_t>;

// io::ZipArchive over a MemorySource, then find / data_offset / read of every entry.
void zip_archive(Input data);
// pickle::unpickle with a persistent_load that builds StorageRefs like TorchArchive's, then a walk of the
// result (kind, attributes, args_to_json where an argparse-like object shows up).
void pickle_stream(Input data);
// formats::TorchArchive on the whole input: load(), then tensor_location() of every TensorRef reachable from
// the root, and args_to_json of root["args"] as the legacy indexer does.
void torch_archive(Input data);
// pickle::unpickle without persistent ids, then formats::parse_dcp_metadata, as read_dcp_metadata does.
void dcp_metadata(Input data);
// io::parse_safetensors_header on the input as a whole file, and on its 8-byte prefix alone.
void safetensors_header(Input data);

// The targets by name ("zip_archive", "pickle", ...): the folder names under tests/fuzz_regressions/.
using Entry = void (*)(Input);
Entry entry_by_name(std::string_view name);

}  // namespace m2h::fuzz
