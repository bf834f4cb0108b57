#pragma once
// Where the transfer executor's assembled windows go. The executor calls write_round on every rank once per
// round, in round order, with the windows that rank writes in that round (possibly none), so an
// implementation may make collective calls (parallel HDF5 does).
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "io/file.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::io {

struct WindowBytes {
    std::uint32_t index = 0;  // into TransferPlan::windows
    const plan::Window* window = nullptr;
    std::span<const std::byte> bytes;  // window->size bytes, in output-file order
};

class OutputSink {
public:
    virtual ~OutputSink() = default;
    virtual void write_round(std::size_t round, std::span<const WindowBytes> windows) = 0;
    // True when write_round makes no MPI call and may be called from two threads at once. The executor then
    // writes each round on a second thread while the next round is read and exchanged (one round at a time, in
    // order), and writes streamed ranges from a third, in stretches of a window (each given as a Window of its
    // own: same file, its own offset and size) and under round number SIZE_MAX.
    virtual bool concurrent() const { return false; }
};

// The safetensors output: each window is one positioned write into its (already sized) file.
class FileSink final : public OutputSink {
public:
    explicit FileSink(std::vector<std::string> paths) : paths_(std::move(paths)) {}
    void write_round(std::size_t round, std::span<const WindowBytes> windows) override;
    bool concurrent() const override { return true; }

private:
    const File& file(std::uint32_t index);

    std::vector<std::string> paths_;
    std::mutex opening_;
    std::map<std::uint32_t, std::unique_ptr<File>> files_;  // opened on first use
};

}  // namespace m2h::io
