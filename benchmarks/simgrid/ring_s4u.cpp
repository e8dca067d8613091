/* A ringsim program replayed on SimGrid's S4U API, for benchmarks/bench_simgrid.py.
 *
 * Input (text, whitespace-separated; written by bench_simgrid.py from a ringsim program):
 *   L                          directed links
 *   bandwidth_Bps latency_s    L lines
 *   H                          hops (src -> dst rank pairs)
 *   src dst k id_1 .. id_k     H lines: the hop's route as directed link ids
 *   G N                        ranks, steps
 *   c_0 .. c_{G-1}             N lines: compute seconds per rank at step n
 *   M_n                        then, per step n: M_n messages "hop bytes" (posted at the step's start,
 *                              waited at its end: the ring protocol with rendezvous)
 *
 * Every rank is an actor on its own host; every directed link a SimGrid link (SHARED); every hop a
 * route of those links. At each step a rank posts its sends (put_async) then its receives (get_async)
 * on one mailbox per hop — a transfer starts when both are posted, as ringsim's rendezvous —, sleeps
 * its compute, and waits for every posted transfer. Run with the max-min network model configured like
 * ringsim's (CM02 without TCP window bound, cross-traffic or latency/bandwidth correction factors):
 *   --cfg=network/model:CM02 --cfg=network/TCP-gamma:0 --cfg=network/crosstraffic:0
 *   --cfg=network/latency-factor:1 --cfg=network/bandwidth-factor:1 --cfg=network/weight-S:0
 *
 * Output (stdout): "wall_s <seconds of platform building and simulation>" and "makespan_s <t>";
 * with a third argument, every rank's step end times are written to that file (one line per step).
 */
#include <simgrid/s4u.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace sg4 = simgrid::s4u;

struct Msg {
  int hop;
  double bytes;
};

static int G, N;
static std::vector<std::vector<double>> compute;      // [n][r]
static std::vector<std::vector<Msg>> messages;        // [n]
static std::vector<int> hop_src, hop_dst;
static std::vector<sg4::Mailbox*> boxes;              // one per hop
static std::vector<std::vector<double>> step_end;     // [n][r]
static int token = 0;

static void rank_actor(int r)
{
  for (int n = 0; n < N; n++) {
    std::vector<sg4::CommPtr> comms;
    for (const Msg& m : messages[n])
      if (hop_src[m.hop] == r)
        comms.push_back(boxes[m.hop]->put_async(&token, static_cast<uint64_t>(m.bytes)));
    for (const Msg& m : messages[n])
      if (hop_dst[m.hop] == r) {
        int* got;
        comms.push_back(boxes[m.hop]->get_async<int>(&got));
      }
    double c = compute[n][r];
    if (c > 0)
      sg4::this_actor::sleep_for(c);
    sg4::Comm::wait_all(comms);
    step_end[n][r] = sg4::Engine::get_clock();
  }
}

int main(int argc, char** argv)
{
  sg4::Engine e(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PROGRAM.txt [TIMES.txt] [--cfg=...]\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  int L, H;
  in >> L;
  std::vector<double> bw(L), lat(L);
  for (int i = 0; i < L; i++)
    in >> bw[i] >> lat[i];
  in >> H;
  std::vector<std::vector<int>> route(H);
  hop_src.resize(H);
  hop_dst.resize(H);
  for (int h = 0; h < H; h++) {
    int k;
    in >> hop_src[h] >> hop_dst[h] >> k;
    route[h].resize(k);
    for (int j = 0; j < k; j++)
      in >> route[h][j];
  }
  in >> G >> N;
  compute.assign(N, std::vector<double>(G));
  for (int n = 0; n < N; n++)
    for (int r = 0; r < G; r++)
      in >> compute[n][r];
  messages.resize(N);
  for (int n = 0; n < N; n++) {
    int M;
    in >> M;
    messages[n].resize(M);
    for (int j = 0; j < M; j++)
      in >> messages[n][j].hop >> messages[n][j].bytes;
  }
  if (!in) {
    std::fprintf(stderr, "%s: malformed program file\n", argv[1]);
    return 2;
  }
  step_end.assign(N, std::vector<double>(G, 0.0));

  auto t0 = std::chrono::steady_clock::now();
  auto* zone = sg4::create_full_zone("ring");
  std::vector<sg4::Host*> hosts(G);
  for (int r = 0; r < G; r++)
    hosts[r] = zone->create_host("r" + std::to_string(r), 1.0);
  std::vector<sg4::Link*> links(L);
  for (int i = 0; i < L; i++)
    links[i] = zone->create_link("l" + std::to_string(i), bw[i])->set_latency(lat[i])->seal();
  for (int h = 0; h < H; h++) {
    std::vector<sg4::LinkInRoute> lr;
    for (int id : route[h])
      lr.emplace_back(links[id]);
    zone->add_route(hosts[hop_src[h]]->get_netpoint(), hosts[hop_dst[h]]->get_netpoint(), nullptr, nullptr, lr,
                    false);
  }
  zone->seal();
  for (int h = 0; h < H; h++)
    boxes.push_back(sg4::Mailbox::by_name("h" + std::to_string(h)));
  for (int r = 0; r < G; r++)
    sg4::Actor::create("rank" + std::to_string(r), hosts[r], rank_actor, r);
  e.run();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double makespan = 0;
  for (int r = 0; r < G; r++)
    makespan = std::max(makespan, step_end[N - 1][r]);
  std::printf("wall_s %.9f\nmakespan_s %.17g\n", wall, makespan);
  if (argc >= 3) {
    std::FILE* f = std::fopen(argv[2], "w");
    for (int n = 0; n < N; n++) {
      for (int r = 0; r < G; r++)
        std::fprintf(f, "%.17g ", step_end[n][r]);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
  }
  return 0;
}
