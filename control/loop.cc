#include "control/loop.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace tern::control {
namespace {

uint64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

EventLoop::EventLoop() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw_errno("epoll_create1");
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) {
    int e = errno;
    close(epfd_);
    throw std::system_error(e, std::generic_category(), "eventfd");
  }
  now_ms_ = monotonic_ms();
  add(evfd_, EPOLLIN, [this](uint32_t) {
    uint64_t v;
    while (read(evfd_, &v, sizeof v) > 0) {
    }
    drain_posted();
  });
}

EventLoop::~EventLoop() {
  if (sigfd_ >= 0) close(sigfd_);
  if (evfd_ >= 0) close(evfd_);
  if (epfd_ >= 0) close(epfd_);
}

void EventLoop::add(int fd, uint32_t events, FdCallback cb) {
  uint32_t gen = next_gen_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = uint64_t(gen) << 32 | uint32_t(fd);
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) throw_errno("epoll_ctl(ADD)");
  fds_[fd] = Reg{gen, std::make_shared<FdCallback>(std::move(cb))};
}

void EventLoop::modify(int fd, uint32_t events) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = uint64_t(it->second.gen) << 32 | uint32_t(fd);
  if (epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) < 0) throw_errno("epoll_ctl(MOD)");
}

void EventLoop::remove(int fd) {
  if (fds_.erase(fd) == 0) return;
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::after(std::chrono::milliseconds delay, std::function<void()> cb) {
  TimerId id = next_timer_++;
  uint64_t due = now_ms_ + uint64_t(std::max<int64_t>(0, delay.count()));
  heap_.push_back({due, id});
  std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
  timer_cbs_.emplace(id, std::move(cb));
  return id;
}

void EventLoop::cancel(TimerId id) {
  // Lazy deletion: the heap entry stays until it surfaces, its callback is gone now.
  timer_cbs_.erase(id);
  if (timer_cbs_.empty()) heap_.clear();
}

void EventLoop::on_signal(int sig, std::function<void(int)> cb) {
  signals_[sig] = std::move(cb);
  sigset_t set;
  sigemptyset(&set);
  for (auto& [s, _] : signals_) sigaddset(&set, s);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw_errno("pthread_sigmask");
  if (sigfd_ >= 0) {
    if (signalfd(sigfd_, &set, SFD_NONBLOCK | SFD_CLOEXEC) < 0) throw_errno("signalfd");
    return;
  }
  sigfd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigfd_ < 0) throw_errno("signalfd");
  add(sigfd_, EPOLLIN, [this](uint32_t) {
    signalfd_siginfo si;
    while (read(sigfd_, &si, sizeof si) == ssize_t(sizeof si)) {
      auto it = signals_.find(int(si.ssi_signo));
      if (it != signals_.end()) it->second(int(si.ssi_signo));
    }
  });
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lk(post_mu_);
    posted_.push_back(std::move(fn));
  }
  wake();
}

void EventLoop::wake() {
  uint64_t one = 1;
  // A full eventfd counter still wakes the loop; the write result does not matter.
  [[maybe_unused]] ssize_t r = write(evfd_, &one, sizeof one);
}

void EventLoop::stop() {
  stop_.store(true, std::memory_order_relaxed);
  wake();
}

uint64_t EventLoop::refresh_now() { return now_ms_ = monotonic_ms(); }

void EventLoop::drain_posted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lk(post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

void EventLoop::run_timers() {
  while (!heap_.empty() && heap_.front().due <= now_ms_) {
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
    TimerId id = heap_.back().id;
    heap_.pop_back();
    auto it = timer_cbs_.find(id);
    if (it == timer_cbs_.end()) continue;  // cancelled
    auto cb = std::move(it->second);
    timer_cbs_.erase(it);
    cb();
  }
}

void EventLoop::run() {
  stop_.store(false, std::memory_order_relaxed);
  constexpr int kMaxEvents = 64;
  epoll_event evs[kMaxEvents];
  while (!stop_.load(std::memory_order_relaxed)) {
    refresh_now();
    run_timers();
    drain_posted();
    if (stop_.load(std::memory_order_relaxed)) break;
    // Sleep until the next timer (or forever when none): idle costs no CPU.
    int timeout = -1;
    while (!heap_.empty() && !timer_cbs_.count(heap_.front().id)) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
      heap_.pop_back();
    }
    if (!heap_.empty()) {
      uint64_t due = heap_.front().due;
      timeout = due <= now_ms_ ? 0 : int(std::min<uint64_t>(due - now_ms_, 60000));
    }
    int n = epoll_wait(epfd_, evs, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    refresh_now();
    for (int i = 0; i < n; ++i) {
      int fd = int(uint32_t(evs[i].data.u64));
      uint32_t gen = uint32_t(evs[i].data.u64 >> 32);
      auto it = fds_.find(fd);
      // Removed (or removed and reused) by an earlier callback this turn: not for us.
      if (it == fds_.end() || it->second.gen != gen) continue;
      auto cb = it->second.cb;  // keeps the callable alive through its own remove()
      (*cb)(evs[i].events);
    }
  }
}

}  // namespace tern::control
