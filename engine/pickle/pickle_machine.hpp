#pragma once
// A pickle virtual machine (protocols 2-5) that never executes anything: one switch over opcodes, a stack,
// a mark stack and a memo. GLOBALs become ClassRefs; a short allow-list of torch and stdlib callables is
// interpreted (tensor rebuild functions, OrderedDict, codecs.encode, ...); every other name on the allow-list is inert data, and
// a name off it is refused.
#include <cstddef>
#include <functional>
#include <span>
#include <string>

#include "pickle/value.hpp"

namespace m2h::pickle {

struct Limits {
    std::size_t max_memo = 10'000'000;
    std::size_t max_depth = 10'000;    // container nesting (a tuple of a tuple of ... counts one per level)
    std::size_t max_stack = 1'000'000; // stack items plus open marks; above max_depth since a long tuple
                                       // (MARK, items..., TUPLE) sits on the stack whole
};

// Turns a persistent id (BINPERSID) into a value; torch.save archives pass one that builds StorageRefs.
using PersistentLoad = std::function<ValuePtr(const ValuePtr& pid)>;

// Runs the pickle in `bytes` and returns the object STOP pops. Errors name `source` and the opcode offset.
ValuePtr unpickle(std::span<const std::byte> bytes, const std::string& source, const PersistentLoad& persistent_load,
                  const Limits& limits = {});

}  // namespace m2h::pickle
