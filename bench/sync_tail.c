/* The tail of a journal sync on this disk: `pwrite` of a 4 KiB block into a
 * file already written through, then `fdatasync`, 20,000 times; with
 * `objects`, each is preceded by what the local store does for an object
 * (create a file, write 4 KiB, hard-link it, remove the temporary name).
 * With a number, the thread sleeps that many microseconds after each sync
 * (5,000 syncs then), so that the disk is idle before the next one, as it is
 * between a server's batches. Prints p50, p90, p99, p99.9, max, the mean,
 * how many took over 10 ms, and the idle time actually left between syncs.
 *
 *   gcc -O2 bench/sync_tail.c -o /tmp/sync_tail && /tmp/sync_tail DIR [objects] [GAP_US]
 *
 * DIR must be on the disk to measure (not tmpfs). The journal file is
 * removed at the end; the objects are left under DIR (delete them). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
enum { N_MAX = 20000, N_GAP = 5000, OBJECT = 4096, JOURNAL = 16 << 20 };
static double samples[N_MAX];
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s DIR [objects] [GAP_US]\n", argv[0]); return 2; }
  int objects = 0;
  long gap_us = 0;
  for (int a = 2; a < argc; a++) {
    if (strcmp(argv[a], "objects") == 0) objects = 1;
    else if ((gap_us = atol(argv[a])) <= 0) { fprintf(stderr, "bad argument: %s\n", argv[a]); return 2; }
  }
  int n = gap_us ? N_GAP : N_MAX;
  struct timespec gap = { gap_us / 1000000, (gap_us % 1000000) * 1000 };
  double idle = 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/sync-tail-%d", argv[1], (int)getpid());
  int journal = open(path, O_CREAT | O_RDWR, 0644);
  char *zeros = calloc(1, JOURNAL);
  if (journal < 0 || !zeros || pwrite(journal, zeros, JOURNAL, 0) != JOURNAL || fsync(journal)) { perror("setup"); return 1; }
  static char block[OBJECT];
  memset(block, 'x', sizeof block);
  double started = now_ms();
  int slow = 0;
  for (int i = 0; i < n; i++) {
    if (gap_us) {
      double slept = now_ms();
      nanosleep(&gap, NULL);
      idle += now_ms() - slept;
    }
    double at = now_ms();
    if (objects) {
      char temp[4200], name[4200];
      snprintf(temp, sizeof temp, "%s-t%d", path, i);
      snprintf(name, sizeof name, "%s-o%d", path, i);
      int fd = open(temp, O_CREAT | O_WRONLY | O_EXCL, 01644);
      if (fd < 0 || write(fd, block, OBJECT) != OBJECT || link(temp, name)) { perror("object"); return 1; }
      close(fd);
      unlink(temp);
      at = now_ms();
    }
    if (pwrite(journal, block, OBJECT, (off_t)(i % (JOURNAL / OBJECT)) * OBJECT) != OBJECT || fdatasync(journal)) {
      perror("fdatasync");
      return 1;
    }
    samples[i] = now_ms() - at;
    if (samples[i] > 10) slow++;
  }
  double total = now_ms() - started, sum = 0;
  for (int i = 0; i < n; i++) sum += samples[i];
  qsort(samples, n, sizeof(double), by_value);
  printf("%d syncs%s in %.1f s: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.1f mean %.3f ms; %d over 10 ms; "
         "idle before each %.3f ms\n",
         n, objects ? " (each after an object)" : "", total / 1000, samples[n / 2], samples[n * 9 / 10],
         samples[n * 99 / 100], samples[n * 999 / 1000], samples[n - 1], sum / n, slow, idle / n);
  unlink(path);
  return 0;
}
