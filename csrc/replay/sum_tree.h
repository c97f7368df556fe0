// A sum tree over N non-negative priorities: set one in O(log N), the total in O(1), and
// the leaf where a running sum first exceeds u in O(log N). What prioritized replay
// (Schaul et al. 2016, "Prioritized Experience Replay", proportional variant) draws with:
// leaf i is drawn with probability p_i / sum_j p_j, and a leaf of priority 0 never.
//
// Framework-free C++17 (header only), used by the replay memory; host-tested by
// sum_tree_test.cc. Not thread-safe: the replay memory's mutex guards it.
//
// Layout: a complete binary tree in one array (node 1 the root, node k's children 2k and
// 2k+1, the leaves at [leaf_base, leaf_base + N), leaf_base the power of two >= N). Sums
// are double and every ancestor is recomputed from its two children when a leaf changes,
// never adjusted by a difference, so no rounding drift builds up over millions of updates:
// a node always equals the double sum of its children exactly as they are now.
#ifndef TFDQN_CSRC_REPLAY_SUM_TREE_H_
#define TFDQN_CSRC_REPLAY_SUM_TREE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace tfdqn {

class SumTree {
 public:
  explicit SumTree(int64_t size) : size_(size) {
    if (size < 1) throw std::invalid_argument("SumTree: size must be >= 1");
    leaf_base_ = 1;
    while (leaf_base_ < size) leaf_base_ *= 2;
    nodes_.assign(static_cast<size_t>(2 * leaf_base_), 0.0);
  }

  int64_t size() const { return size_; }
  double total() const { return nodes_[1]; }
  double get(int64_t index) const { return nodes_[Leaf(index)]; }

  // Sets leaf `index` to `priority` (finite, >= 0) and updates its ancestors.
  void set(int64_t index, double priority) {
    if (!(priority >= 0.0) || !std::isfinite(priority)) {
      throw std::invalid_argument("SumTree: priority must be finite and >= 0, got " +
                                  std::to_string(priority));
    }
    int64_t node = Leaf(index);
    nodes_[node] = priority;
    for (node /= 2; node >= 1; node /= 2) nodes_[node] = nodes_[2 * node] + nodes_[2 * node + 1];
  }

  // The leaf i with sum(p_0 .. p_{i-1}) <= u < sum(p_0 .. p_i), for u in [0, total()):
  // with u uniform in [0, total()), leaf i comes with probability p_i / total(). A leaf of
  // priority 0 is never returned; u outside [0, total()) (rounding at the top end) gives
  // the last leaf with a positive priority. Requires total() > 0.
  int64_t find(double u) const {
    if (!(nodes_[1] > 0.0)) throw std::logic_error("SumTree::find on an empty tree");
    int64_t node = 1;
    while (node < leaf_base_) node = Descend(node, &u);
    return node - leaf_base_;
  }

  // find() for n values at once: the same leaves. The descents go level by level, all n
  // at the same depth, with the next level's node of each prefetched, so that the n
  // cache misses of a level overlap; one descent alone is a chain of dependent misses
  // (about 20 for 1M leaves, most of them outside the caches).
  void find_many(const double* u, int64_t n, int64_t* out) const {
    if (!(nodes_[1] > 0.0)) throw std::logic_error("SumTree::find on an empty tree");
    std::vector<double> rest(u, u + n);
    for (int64_t i = 0; i < n; ++i) out[i] = 1;
    for (int64_t width = 1; width < leaf_base_; width *= 2) {  // one level per pass
      for (int64_t i = 0; i < n; ++i) {
        out[i] = Descend(out[i], &rest[i]);
        __builtin_prefetch(&nodes_[2 * out[i] < 2 * leaf_base_ ? 2 * out[i] : 1]);
      }
    }
    for (int64_t i = 0; i < n; ++i) out[i] -= leaf_base_;
  }

 private:
  // One step down from `node` toward the leaf that u (relative to node's subtree) falls in:
  // right when u is past the left subtree (an empty left subtree included: u >= 0 == its
  // sum), unless the right one is empty too (u at or past the top end).
  int64_t Descend(int64_t node, double* u) const {
    const int64_t left = 2 * node;
    if (*u >= nodes_[left] && nodes_[left + 1] > 0.0) {
      *u -= nodes_[left];
      return left + 1;
    }
    return left;
  }

  int64_t Leaf(int64_t index) const {
    if (index < 0 || index >= size_) {
      throw std::out_of_range("SumTree: index " + std::to_string(index) + " not in [0, " +
                              std::to_string(size_) + ")");
    }
    return leaf_base_ + index;
  }

  int64_t size_;
  int64_t leaf_base_;
  std::vector<double> nodes_;
};

// The minimum over N values, +infinity for unset (or reset) leaves: the smallest positive
// priority, which the largest importance weight (N * P_min)^-beta needs. Same layout and
// the same recompute-from-children rule as SumTree.
class MinTree {
 public:
  explicit MinTree(int64_t size) : size_(size) {
    if (size < 1) throw std::invalid_argument("MinTree: size must be >= 1");
    leaf_base_ = 1;
    while (leaf_base_ < size) leaf_base_ *= 2;
    nodes_.assign(static_cast<size_t>(2 * leaf_base_), kEmpty);
  }

  static constexpr double kEmpty = std::numeric_limits<double>::infinity();

  double min() const { return nodes_[1]; }  // kEmpty when every leaf is

  // value kEmpty resets the leaf.
  void set(int64_t index, double value) {
    if (index < 0 || index >= size_) {
      throw std::out_of_range("MinTree: index " + std::to_string(index) + " not in [0, " +
                              std::to_string(size_) + ")");
    }
    int64_t node = leaf_base_ + index;
    nodes_[node] = value;
    for (node /= 2; node >= 1; node /= 2) {
      nodes_[node] = std::min(nodes_[2 * node], nodes_[2 * node + 1]);
    }
  }

 private:
  int64_t size_;
  int64_t leaf_base_;
  std::vector<double> nodes_;
};

}  // namespace tfdqn

#endif  // TFDQN_CSRC_REPLAY_SUM_TREE_H_
