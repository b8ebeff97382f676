// tern-control event loop: one thread, epoll, timers, cross-thread/signal posting.
//
// Contract: every method except post(), stop() and wake() must be called on the loop
// thread (the thread running run()). post() may be called from any thread; stop() and
// wake() are async-signal-safe (an atomic store and an eventfd write). Callbacks run on
// the loop thread, one at a time, so state they touch needs no locks.
//
// Removing an fd or cancelling a timer from inside any callback is safe, including the
// callback of that very fd/timer: dispatch re-checks registration before every call.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tern::control {

class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;  // EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP
  using TimerId = uint64_t;                                   // 0 is never a valid id

  EventLoop();  // throws std::system_error when epoll/eventfd cannot be created
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // fd registration (level triggered). add() throws std::system_error on failure; the
  // loop never owns or closes the fd.
  void add(int fd, uint32_t events, FdCallback cb);
  void modify(int fd, uint32_t events);
  void remove(int fd);
  // remove() for an fd the caller closes right away and never dup()ed: close() takes it
  // out of the epoll set, so this skips the EPOLL_CTL_DEL syscall.
  void forget(int fd) { fds_.erase(fd); }

  // One-shot timers with millisecond resolution on CLOCK_MONOTONIC.
  TimerId after(std::chrono::milliseconds delay, std::function<void()> cb);
  void cancel(TimerId id);  // unknown or already fired ids are ignored

  // Signals: blocks `sig` in the calling thread (call before starting other threads) and
  // delivers it through a signalfd as a normal callback on the loop thread.
  void on_signal(int sig, std::function<void(int sig)> cb);

  // Runs fn on the loop thread at the next turn. Thread-safe (not async-signal-safe:
  // use on_signal for signals).
  void post(std::function<void()> fn);

  void run();   // until stop(); returns after finishing the current turn
  void stop();  // async-signal-safe
  bool stopping() const { return stop_.load(std::memory_order_relaxed); }

  // Cached monotonic time of the current turn, in ms; refreshed every turn.
  uint64_t now_ms() const { return now_ms_; }
  uint64_t refresh_now();  // re-reads the clock (for long callbacks)

 private:
  struct Timer {
    uint64_t due;
    TimerId id;
    bool operator>(const Timer& o) const { return due != o.due ? due > o.due : id > o.id; }
  };
  void wake();
  void run_timers();
  void drain_posted();

  int epfd_ = -1;
  int evfd_ = -1;
  int sigfd_ = -1;
  std::atomic<bool> stop_{false};
  uint64_t now_ms_ = 0;
  // fd -> (registration generation, callback). epoll carries the generation too, so an
  // event queued for a closed fd never reaches a new registration that reused the
  // number in the same turn. shared_ptr: a callback survives its own remove().
  struct Reg {
    uint32_t gen;
    std::shared_ptr<FdCallback> cb;
  };
  std::unordered_map<int, Reg> fds_;
  uint32_t next_gen_ = 1;
  std::vector<Timer> heap_;  // min-heap on due
  std::unordered_map<TimerId, std::function<void()>> timer_cbs_;
  TimerId next_timer_ = 1;
  std::unordered_map<int, std::function<void(int)>> signals_;
  std::mutex post_mu_;  // guards posted_ only; never held while running callbacks
  std::vector<std::function<void()>> posted_;
};

}  // namespace tern::control
