// defines: IslandReports, word_of, double_of
#include "roles/island_reports.hpp"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "wire/mpi_tags.hpp"  // defines: TAG_REPORT

namespace px {

int64_t word_of(double x) {
  int64_t w;
  std::memcpy(&w, &x, sizeof w);
  return w;
}

double double_of(int64_t w) {
  double x;
  std::memcpy(&x, &w, sizeof x);
  return x;
}

IslandReports::IslandReports(const Topology& topo, Comm& control) : topo_(topo), control_(control) {}

void IslandReports::report(Kind kind, int64_t step, const Words& words) {
  if (topo_.world_rank == 0) return add(kind, step, 0, words);
  auto s = std::make_unique<Send>();
  s->msg = {kind, step, topo_.island};
  s->msg.insert(s->msg.end(), words.begin(), words.end());
  s->req = control_.isend(s->msg.data(), (int)(s->msg.size() * sizeof(int64_t)), 0, TAG_REPORT,
                          Tier::CONTROL);
  sends_.push_back(std::move(s));
  std::erase_if(sends_, [](std::unique_ptr<Send>& x) { return Comm::test(x->req); });
}

void IslandReports::add(Kind kind, int64_t step, int64_t island, Words words) {
  if (kind != INTERVAL && kind != EVAL)
    throw std::runtime_error(fmt::format("island report of unknown kind {}", kind));
  if (island < 0 || island >= topo_.islands)
    throw std::runtime_error(fmt::format("island report from island {} of {}", island, topo_.islands));
  Group& g = pending_[kind][step];
  g.step = step;
  g.islands.resize(topo_.islands);
  g.islands[island] = std::move(words);
}

void IslandReports::receive_one() {
  const MPI_Status st = control_.probe(MPI_ANY_SOURCE, TAG_REPORT);
  const int bytes = Comm::status_bytes(st);
  Words msg((size_t)bytes / sizeof(int64_t));
  control_.recv(msg.data(), bytes, st.MPI_SOURCE, TAG_REPORT);
  if (msg.size() < 3 || bytes % (int)sizeof(int64_t) != 0)
    throw std::runtime_error(fmt::format("island report of {} bytes from learner {}", bytes, st.MPI_SOURCE));
  add((Kind)msg[0], msg[1], msg[2], Words(msg.begin() + 3, msg.end()));
}

void IslandReports::poll() {
  while (control_.iprobe(MPI_ANY_SOURCE, TAG_REPORT)) receive_one();
}

bool IslandReports::complete(const Group& g) const {
  for (const Words& w : g.islands)
    if (w.empty()) return false;
  return true;
}

void IslandReports::drain() {
  if (topo_.world_rank == 0)
    for (auto& by_step : pending_)
      for (auto& [step, g] : by_step)
        while (!complete(g)) receive_one();
  for (auto& s : sends_) Comm::wait(s->req);
  sends_.clear();
}

std::vector<IslandReports::Group> IslandReports::take_complete(Kind kind) {
  std::vector<Group> out;
  auto& by_step = pending_[kind];
  while (!by_step.empty() && complete(by_step.begin()->second)) {
    out.push_back(std::move(by_step.begin()->second));
    by_step.erase(by_step.begin());
  }
  return out;
}

}  // namespace px
