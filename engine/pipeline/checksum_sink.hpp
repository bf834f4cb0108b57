#pragma once
// An OutputSink decorator: checksums the bytes each writer received (per tensor stretch of each window) before
// passing the windows on, for the manifest and --verify.
#include <vector>

#include "io/output_sink.hpp"
#include "pipeline/manifest.hpp"

namespace m2h::pipeline {

class ChecksumSink final : public io::OutputSink {
public:
    ChecksumSink(io::OutputSink& inner, const plan::OutputLayout& layout, const std::vector<plan::OutputTensor>& tensors)
        : inner_(inner), layout_(layout), tensors_(tensors) {}

    void write_round(std::size_t round, std::span<const io::WindowBytes> windows) override {
        for (const auto& w : windows) {
            auto segments = window_segments(layout_, tensors_, *w.window);
            checksum_segments(segments, layout_, *w.window, w.bytes);
            segments_.insert(segments_.end(), segments.begin(), segments.end());
        }
        inner_.write_round(round, windows);
    }
    bool concurrent() const override { return inner_.concurrent(); }
    const std::vector<Segment>& segments() const noexcept { return segments_; }

private:
    io::OutputSink& inner_;
    const plan::OutputLayout& layout_;
    const std::vector<plan::OutputTensor>& tensors_;
    std::vector<Segment> segments_;
};

}  // namespace m2h::pipeline
