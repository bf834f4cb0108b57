#pragma once
// An OutputSink decorator: checksums the bytes each writer received (per tensor stretch of each window) before
// passing the windows on, for the manifest and --verify.
#include <vector>

#include "common/crc32c.hpp"
#include "io/output_sink.hpp"
#include "pipeline/manifest.hpp"

namespace m2h::pipeline {

class ChecksumSink final : public io::OutputSink {
public:
    ChecksumSink(io::OutputSink& inner, const plan::OutputLayout& layout, const std::vector<plan::OutputTensor>& tensors)
        : inner_(inner), layout_(layout), tensors_(tensors) {}

    void write_round(std::size_t round, std::span<const io::WindowBytes> windows) override {
        for (const auto& w : windows)
            for (const auto& segment : window_segments(layout_, tensors_, *w.window)) add(segment, *w.window, w.bytes);
        inner_.write_round(round, windows);
    }
    bool concurrent() const override { return inner_.concurrent(); }
    const std::vector<Segment>& segments() const noexcept { return segments_; }

private:
    // A streamed piece arrives in many small stretches: a stretch that continues the last segment of its tensor
    // extends that segment's CRC, so the manifest gathers about as many segments as there are windows.
    void add(Segment s, const plan::Window& window, std::span<const std::byte> bytes) {
        const auto in = bytes.subspan(layout_.placement[s.tensor].offset + s.offset - window.offset, s.length);
        if (!segments_.empty()) {
            auto& last = segments_.back();
            if (last.tensor == s.tensor && last.offset + last.length == s.offset) {
                last.crc = crc32c(in, last.crc);
                last.length += s.length;
                return;
            }
        }
        s.crc = crc32c(in);
        segments_.push_back(s);
    }

    io::OutputSink& inner_;
    const plan::OutputLayout& layout_;
    const std::vector<plan::OutputTensor>& tensors_;
    std::vector<Segment> segments_;
};

}  // namespace m2h::pipeline
