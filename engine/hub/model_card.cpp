#include "hub/model_card.hpp"

#include <algorithm>
#include <regex>

#include <nlohmann/json.hpp>

namespace m2h::hub {

namespace {

const std::regex& placeholder() {
    static const std::regex re(R"(\{\{([a-z0-9_]+)(\|yaml)?\}\})");
    return re;
}

const std::regex& section_mark() {
    static const std::regex re(R"(\s*\{\{([#^/])([a-z0-9_]+)\}\}\s*)");
    return re;
}

bool has(const CardFields& fields, const std::string& name) {
    const auto it = fields.find(name);
    return it != fields.end() && !it->second.empty();
}

void note_missing(std::vector<std::string>& missing, const std::string& name) {
    if (std::find(missing.begin(), missing.end(), name) == missing.end()) missing.push_back(name);
}

// One line with its fields filled in, or nothing when one of them has no value.
bool fill(const std::string& line, const CardFields& fields, std::string& out, std::vector<std::string>& missing) {
    std::string filled;
    auto last = line.cbegin();
    bool complete = true;
    for (std::sregex_iterator it(line.begin(), line.end(), placeholder()), end; it != end; ++it) {
        const auto& m = *it;
        filled.append(last, m[0].first);
        last = m[0].second;
        if (!has(fields, m[1])) {
            note_missing(missing, m[1]);
            complete = false;
            continue;
        }
        const auto& value = fields.at(m[1]);
        filled += m[2].matched ? nlohmann::json(value).dump() : value;
    }
    if (!complete) return false;
    filled.append(last, line.cend());
    out += filled;
    return true;
}

}  // namespace

RenderedCard render_card(std::string_view card_template, const CardFields& fields) {
    RenderedCard card;
    std::vector<std::pair<std::string, bool>> sections;  // open sections, and whether their lines are shown
    const auto shown = [&] { return std::all_of(sections.begin(), sections.end(), [](const auto& s) { return s.second; }); };
    std::size_t start = 0;
    while (start < card_template.size()) {
        auto end = card_template.find('\n', start);
        const bool newline = end != std::string_view::npos;
        if (!newline) end = card_template.size();
        const std::string line(card_template.substr(start, end - start));
        start = end + 1;
        std::smatch mark;
        if (std::regex_match(line, mark, section_mark())) {
            if (mark[1] == "#") {
                if (!has(fields, mark[2])) note_missing(card.missing, mark[2]);
                sections.emplace_back(mark[2], has(fields, mark[2]));
            } else if (mark[1] == "^") {
                sections.emplace_back(mark[2], !has(fields, mark[2]));
            } else if (!sections.empty() && sections.back().first == mark[2]) {
                sections.pop_back();
            }
            continue;
        }
        if (!shown()) continue;
        if (fill(line, fields, card.text, card.missing) && newline) card.text += '\n';
    }
    return card;
}

}  // namespace m2h::hub
