/* How the local store's journal write could be made durable, measured the
 * way the server does it: two IO threads on one core, each creating a batch
 * object first (an unnamed file written, linked and handed to writeback, as
 * src/log/local.rs does), then making a record of it durable in one shared
 * journal file that has been written through once. Three ways:
 *
 *   0  pwrite of the record, then fdatasync (what the journal does today;
 *      records packed one after another)
 *   1  one O_DIRECT | O_DSYNC pwrite of the record padded to 8 KiB, the two
 *      threads writing at once (each record in blocks of its own)
 *   2  the same, but one write at a time (under a mutex)
 *
 * Prints operations per second (object plus record) and the latency of the
 * journal write alone (p50/p90/p99/max), per way, three rounds alternating.
 *
 *   gcc -O2 -pthread bench/journal_write.c -o /tmp/journal_write &&
 *     taskset -c 0 /tmp/journal_write DIR
 *
 * DIR must be on the disk to measure (not tmpfs); everything is written
 * under DIR/journal-write-PID and removed at the end (give the filesystem
 * a minute before measuring anything else on it). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { THREADS = 2, N = 3000, RECORD = 6000, PADDED = 8192, JOURNAL = 128 << 20 };

static int way, round_, journal;
static char directory[512];
static char *buffer;
static atomic_long next_offset;
static double latency[THREADS][N];
static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void must(int ok, const char *what) {
  if (!ok) {
    perror(what);
    exit(1);
  }
}

static void *run(void *arg) {
  long thread = (long)arg;
  char from[64], to[600];
  for (int i = 0; i < N; i++) {
    int object = open(directory, O_TMPFILE | O_WRONLY, 0644);
    must(object >= 0, "O_TMPFILE");
    must(write(object, buffer, RECORD) == RECORD, "write object");
    snprintf(from, sizeof from, "/proc/self/fd/%d", object);
    snprintf(to, sizeof to, "%s/object-%d-%d-%ld-%d", directory, round_, way, thread, i);
    must(linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW) == 0, "linkat");
    sync_file_range(object, 0, 0, SYNC_FILE_RANGE_WRITE);
    close(object);
    double start = now_us();
    if (way == 0) {
      long offset = atomic_fetch_add(&next_offset, RECORD);
      must(pwrite(journal, buffer, RECORD, offset) == RECORD, "pwrite");
      must(fdatasync(journal) == 0, "fdatasync");
    } else {
      if (way == 2) pthread_mutex_lock(&one_at_a_time);
      long offset = atomic_fetch_add(&next_offset, PADDED);
      must(pwrite(journal, buffer, PADDED, offset) == PADDED, "direct pwrite");
      if (way == 2) pthread_mutex_unlock(&one_at_a_time);
    }
    latency[thread][i] = now_us() - start;
  }
  return NULL;
}

static void measure(void) {
  char path[600];
  snprintf(path, sizeof path, "%s/journal-%d", directory, way);
  int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  must(file >= 0, "journal");
  must(pwrite(file, buffer, JOURNAL, 0) == JOURNAL, "write through");
  must(fsync(file) == 0, "fsync");
  close(file);
  journal = open(path, O_RDWR | (way ? O_DIRECT | O_DSYNC : 0));
  must(journal >= 0, "open journal (O_DIRECT needs a disk filesystem)");
  atomic_store(&next_offset, 0);
  double start = now_us();
  pthread_t threads[THREADS];
  for (long t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, run, (void *)t);
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  double elapsed = now_us() - start;
  static double all[THREADS * N];
  for (int t = 0; t < THREADS; t++) memcpy(all + t * N, latency[t], sizeof latency[t]);
  qsort(all, THREADS * N, sizeof(double), by_value);
  static const char *names[] = {"pwrite + fdatasync", "O_DIRECT|O_DSYNC, at once", "O_DIRECT|O_DSYNC, one at a time"};
  printf("%-32s %6.0f ops/s   journal write p50 %4.0f p90 %4.0f p99 %4.0f max %5.0f us\n", names[way],
         THREADS * N / (elapsed / 1e6), all[THREADS * N / 2], all[THREADS * N * 9 / 10],
         all[THREADS * N * 99 / 100], all[THREADS * N - 1]);
  close(journal);
  unlink(path);
}

/* Removed only at the end: on this machine's ext4 (no journal), creating
 * files is slow for tens of seconds after thousands were deleted. */
static void remove_objects(int rounds) {
  char path[600];
  for (int round = 0; round < rounds; round++)
    for (int w = 0; w < 3; w++)
      for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < N; i++) {
          snprintf(path, sizeof path, "%s/object-%d-%d-%d-%d", directory, round, w, t, i);
          unlink(path);
        }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  snprintf(directory, sizeof directory, "%s/journal-write-%d", argv[1], getpid());
  must(mkdir(directory, 0755) == 0, "mkdir");
  must(posix_memalign((void **)&buffer, 4096, JOURNAL) == 0, "posix_memalign");
  memset(buffer, 7, JOURNAL);
  for (round_ = 0; round_ < 3; round_++)
    for (way = 0; way < 3; way++) measure();
  remove_objects(3);
  rmdir(directory);
  return 0;
}
