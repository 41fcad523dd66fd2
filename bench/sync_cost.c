/* The cost of making one small object durable on this disk, the two ways
 * the local store has done it: a new file synced, hard-linked and its
 * directory synced (two filesystem journal commits), against the journal's
 * way: a new file linked unsynced plus one fdatasync of a file already
 * written through (data only). Wall time per operation (p50/p90/p99) and
 * system CPU per operation, alternating, two rounds.
 *
 *   gcc -O2 bench/sync_cost.c -o /tmp/sync_cost && /tmp/sync_cost DIR
 *
 * DIR must be on the disk to measure (not tmpfs); the program writes under
 * DIR/sync-cost-PID and removes nothing (delete it afterwards). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { N = 400, OBJECT = 4096, JOURNAL = 16 << 20 };
static double samples[N];

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static double system_ms(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_stime.tv_sec * 1e3 + usage.ru_stime.tv_usec / 1e3;
}
static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static void report(const char *what, double system) {
  qsort(samples, N, sizeof(double), by_value);
  printf("%-44s p50 %.3f p90 %.3f p99 %.3f ms, system CPU %.3f ms per op\n", what, samples[N / 2],
         samples[N * 9 / 10], samples[N * 99 / 100], system / N);
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s DIR\n", argv[0]); return 2; }
  char root[4096], tmp[4200], log[4200], temp[4400], name[4400], journal_path[4200];
  snprintf(root, sizeof root, "%s/sync-cost-%d", argv[1], (int)getpid());
  snprintf(tmp, sizeof tmp, "%s/tmp", root);
  snprintf(log, sizeof log, "%s/log", root);
  snprintf(journal_path, sizeof journal_path, "%s/journal", root);
  if (mkdir(root, 0755) || mkdir(tmp, 0755) || mkdir(log, 0755)) { perror("mkdir"); return 1; }
  int directory = open(log, O_RDONLY | O_DIRECTORY);
  static char object[OBJECT];
  memset(object, 'x', sizeof object);
  int journal = open(journal_path, O_CREAT | O_RDWR, 0644);
  char *zeros = calloc(1, JOURNAL);
  if (directory < 0 || journal < 0 || !zeros || pwrite(journal, zeros, JOURNAL, 0) != JOURNAL) { perror("setup"); return 1; }
  fsync(journal);
  for (int round = 0; round < 2; round++) {
    double system = system_ms();
    for (int i = 0; i < N; i++) {
      snprintf(temp, sizeof temp, "%s/a%d-%d", tmp, round, i);
      snprintf(name, sizeof name, "%s/a%d-%d", log, round, i);
      double started = now_ms();
      int fd = open(temp, O_CREAT | O_WRONLY | O_EXCL, 0644);
      if (fd < 0 || write(fd, object, OBJECT) != OBJECT || fdatasync(fd) || link(temp, name)) { perror("two syncs"); return 1; }
      close(fd);
      unlink(temp);
      fsync(directory);
      samples[i] = now_ms() - started;
    }
    report("file sync + link + directory sync", system_ms() - system);
    system = system_ms();
    for (int i = 0; i < N; i++) {
      snprintf(temp, sizeof temp, "%s/b%d-%d", tmp, round, i);
      snprintf(name, sizeof name, "%s/b%d-%d", log, round, i);
      double started = now_ms();
      int fd = open(temp, O_CREAT | O_WRONLY | O_EXCL, 01644);
      if (fd < 0 || write(fd, object, OBJECT) != OBJECT || link(temp, name)) { perror("journal"); return 1; }
      close(fd);
      unlink(temp);
      if (pwrite(journal, object, OBJECT, (off_t)i * OBJECT) != OBJECT || fdatasync(journal)) { perror("journal"); return 1; }
      samples[i] = now_ms() - started;
    }
    report("file + link unsynced, journal fdatasync", system_ms() - system);
    system = system_ms();
    for (int i = 0; i < N; i++) {
      double started = now_ms();
      if (pwrite(journal, object, OBJECT, (off_t)i * OBJECT) != OBJECT || fdatasync(journal)) { perror("fdatasync"); return 1; }
      samples[i] = now_ms() - started;
    }
    report("journal fdatasync alone", system_ms() - system);
  }
  return 0;
}
