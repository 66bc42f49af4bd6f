// MSER stability and region selection on a component tree (mser.h).
//
// Flooding units: key grows towards the root (key = I for dark regions, maxval - I for bright).
//   up(n)   = highest ancestor-or-self with key <= key(n) + delta (clamped at the root)   = R_{+delta}
//   down(n) = the node on the largest-child chain with the largest key <= key(n) - delta = R_{-delta}
//             (area 0 when the chain ends above key(n) - delta: the region has vanished)
//   two_sided:  A(up) - A(down)      ancestor: A(up) - A(n)      descendant: A(n) - A(down)
//   normalize:  divided by A(n)
// Rules:
//   LocalMin (paper Eq. 4, strict): min_area <= A <= max_area, S <= max_variation,
//            S < S(parent) and S < S(child) for every child.
//   VLFeat (as vl_mser_process of VLFeat 0.9.21, checked against libvl by
//            python_tests/mser/test_mser_vlfeat.py): the variation is rounded to float32 as VLFeat
//            computes it (float(num) / float(A)); a node is compared with its parent only when
//            key(parent) == key + 1, the larger variation loses (ties: the child); a root is compared
//            with itself and so always loses. Then, parents before children: S >= max_variation,
//            A > max_area or A < min_area drop the node; if min_diversity < 1 (float32), a node is
//            a duplicate, and dropped, when (A(a) - A)/A(a) < min_diversity (float32) where a is its
//            nearest ancestor that is still selected after these filters, or its root when none is.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/errors.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {

// Area difference of every node for the side asked (an integer: areas are pixel counts).
static void node_numerators(const Tree& t, const Params& p, std::vector<int64_t>& num) {
  const int32_t m = static_cast<int32_t>(t.parent.size());
  std::vector<int32_t> big(static_cast<size_t>(m), -1);  // largest child (ties: the first id)
  for (int32_t id = 0; id < m; ++id) {
    const int32_t par = t.parent[id];
    if (par >= 0 && (big[par] < 0 || t.area[id] > t.area[big[par]])) big[par] = id;
  }
  num.assign(static_cast<size_t>(m), 0);
  const int64_t delta = p.delta;
  // Nodes are numbered children-first, so one increasing sweep finds both ends with amortised
  // shortcuts (as VLFeat does for the top): `sc[id]` is an ancestor-or-self of id known to lie at
  // key <= key(id) + delta; `low[id]` is the largest-child-chain node at the largest key <= key - delta
  // (-1: vanished), found by climbing from the child's answer; `leaf[id]` ends the chain.
  std::vector<int32_t> sc(static_cast<size_t>(m)), low(static_cast<size_t>(m)), leaf(static_cast<size_t>(m));
  for (int32_t id = 0; id < m; ++id) sc[id] = id;
  for (int32_t id = 0; id < m; ++id) {
    const int64_t k = t.key[id];
    int32_t u = sc[id];
    while (t.parent[u] >= 0 && t.key[t.parent[u]] <= k + delta) u = t.parent[u];
    const int32_t par = t.parent[id];
    if (par >= 0 && u > sc[par]) sc[par] = u;
    const int32_t b = big[id];
    int32_t d;
    if (delta == 0) {
      d = id;
      leaf[id] = b >= 0 ? leaf[b] : id;
    } else if (b < 0) {
      d = -1;
      leaf[id] = id;
    } else {
      leaf[id] = leaf[b];
      int32_t c = low[b] >= 0 ? low[b] : leaf[b];
      if (t.key[c] > k - delta) {
        d = -1;
      } else {
        while (t.parent[c] != id && t.key[t.parent[c]] <= k - delta) c = t.parent[c];
        d = c;
      }
    }
    low[id] = d;
    const int64_t a = t.area[id];
    const int64_t a_up = t.area[u];
    const int64_t a_down = d >= 0 ? t.area[d] : 0;
    switch (p.side) {
      case Side::Ancestor: num[id] = a_up - a; break;
      case Side::Descendant: num[id] = a - a_down; break;
      default: num[id] = a_up - a_down; break;
    }
  }
}

void node_stability(const Tree& t, const Params& p, std::vector<double>& stab) {
  std::vector<int64_t> num;
  node_numerators(t, p, num);
  stab.resize(num.size());
  for (size_t id = 0; id < num.size(); ++id) {
    const double s = static_cast<double>(num[id]);
    stab[id] = p.normalize ? s / static_cast<double>(t.area[id]) : s;
  }
}

void select_regions(const Tree& t, const Params& p, int8_t polarity, Regions& out) {
  const int32_t m = static_cast<int32_t>(t.parent.size());
  if (m == 0) return;
  std::vector<int64_t> num;
  node_numerators(t, p, num);
  std::vector<double> s(static_cast<size_t>(m));
  std::vector<uint8_t> keep(static_cast<size_t>(m), 0);
  if (p.rule == Rule::LocalMin) {
    for (int32_t id = 0; id < m; ++id)
      s[id] = p.normalize ? static_cast<double>(num[id]) / static_cast<double>(t.area[id]) : static_cast<double>(num[id]);
    std::vector<double> child_min(static_cast<size_t>(m), std::numeric_limits<double>::infinity());
    for (int32_t id = 0; id < m; ++id) {
      const int32_t par = t.parent[id];
      if (par >= 0) child_min[par] = std::min(child_min[par], s[id]);
    }
    for (int32_t id = 0; id < m; ++id) {
      const int32_t par = t.parent[id];
      keep[id] = t.area[id] >= p.min_area && t.area[id] <= p.max_area && s[id] <= p.max_variation &&
                 (par < 0 || s[id] < s[par]) && s[id] < child_min[id];
    }
  } else {
    // VLFeat computes and compares variations and diversities in float32
    std::vector<float> v(static_cast<size_t>(m));
    for (int32_t id = 0; id < m; ++id) {
      v[id] = p.normalize ? static_cast<float>(num[id]) / static_cast<float>(t.area[id]) : static_cast<float>(num[id]);
      s[id] = static_cast<double>(v[id]);  // the reported variation is VLFeat's value
    }
    std::vector<uint8_t> stable(static_cast<size_t>(m), 1);
    for (int32_t id = 0; id < m; ++id) {
      const int32_t par = t.parent[id];
      if (par < 0) {
        stable[id] = 0;  // VLFeat compares a root with itself: the tie is lost
        continue;
      }
      if (t.key[par] != t.key[id] + 1) continue;
      if (v[id] < v[par]) stable[par] = 0; else stable[id] = 0;
    }
    // (float) max_variation as VLFeat; any bound above every possible variation acts as +inf
    const float max_var = p.max_variation > 1e30 ? std::numeric_limits<float>::infinity()
                                                 : static_cast<float>(p.max_variation);
    const float min_div = static_cast<float>(p.min_diversity);
    // parents first (ids are children-first): an ancestor's fate is final when a node is checked
    for (int32_t id = m - 1; id >= 0; --id) {
      if (!stable[id]) continue;
      if (v[id] >= max_var || t.area[id] > p.max_area || t.area[id] < p.min_area) continue;
      if (min_div < 1.0f && t.parent[id] >= 0) {
        int32_t a = t.parent[id];
        while (!keep[a] && t.parent[a] >= 0) a = t.parent[a];
        const float div = static_cast<float>(t.area[a] - t.area[id]) / static_cast<float>(t.area[a]);
        if (div < min_div) continue;
      }
      keep[id] = 1;
    }
  }
  int64_t nsel = 0;
  for (int32_t id = 0; id < m; ++id) nsel += keep[id];
  if (nsel == 0) return;
  // contiguous layout: node range = [own pixels][child 1][child 2]...
  std::vector<int32_t> cstart(static_cast<size_t>(m) + 1, 0), clist(static_cast<size_t>(m));
  for (int32_t id = 0; id < m; ++id)
    if (t.parent[id] >= 0) ++cstart[t.parent[id] + 1];
  for (int32_t id = 0; id < m; ++id) cstart[id + 1] += cstart[id];
  {
    std::vector<int32_t> fill(cstart.begin(), cstart.end() - 1);
    for (int32_t id = 0; id < m; ++id)
      if (t.parent[id] >= 0) clist[fill[t.parent[id]]++] = id;
  }
  std::vector<int64_t> start(static_cast<size_t>(m), 0), cursor(static_cast<size_t>(m), 0);
  std::vector<int64_t> own(static_cast<size_t>(m), 0);
  for (int32_t id = 0; id < m; ++id) {
    own[id] = t.area[id];
    for (int32_t j = cstart[id]; j < cstart[id + 1]; ++j) own[id] -= t.area[clist[j]];
  }
  int64_t root_cursor = 0;
  for (int32_t id = m - 1; id >= 0; --id) {
    if (t.parent[id] < 0) {
      start[id] = root_cursor;
      root_cursor += t.area[id];
    }
    int64_t c = start[id] + own[id];
    for (int32_t j = cstart[id]; j < cstart[id + 1]; ++j) {
      start[clist[j]] = c;
      c += t.area[clist[j]];
    }
    cursor[id] = start[id];
  }
  std::vector<int64_t> layout(static_cast<size_t>(root_cursor));
  const int64_t n = static_cast<int64_t>(t.pixel_node.size());
  for (int64_t px = 0; px < n; ++px) {
    const int32_t id = t.pixel_node[px];
    if (id >= 0) layout[cursor[id]++] = px;
  }
  for (int32_t id = 0; id < m; ++id) {
    if (!keep[id]) continue;
    out.offsets.push_back(static_cast<int64_t>(out.values.size()));
    out.values.insert(out.values.end(), layout.begin() + start[id], layout.begin() + start[id] + t.area[id]);
    out.level.push_back(t.level[id]);
    out.area.push_back(t.area[id]);
    out.variation.push_back(s[id]);
    out.polarity.push_back(polarity);
  }
}

}  // namespace mser
}  // namespace medseg
