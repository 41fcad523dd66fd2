/* The tail of a journal sync on this disk: `pwrite` of a 4 KiB block into a
 * file already written through, then `fdatasync`, 20,000 times; with a
 * second argument, each is preceded by what the local store does for an
 * object (create a file, write 4 KiB, hard-link it, remove the temporary
 * name). Prints p50, p99, p99.9, max and how many took over 10 ms.
 *
 *   gcc -O2 bench/sync_tail.c -o /tmp/sync_tail && /tmp/sync_tail DIR [objects]
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
enum { N = 20000, OBJECT = 4096, JOURNAL = 16 << 20 };
static double samples[N];
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
  if (argc < 2) { fprintf(stderr, "usage: %s DIR [objects]\n", argv[0]); return 2; }
  int objects = argc > 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/sync-tail-%d", argv[1], (int)getpid());
  int journal = open(path, O_CREAT | O_RDWR, 0644);
  char *zeros = calloc(1, JOURNAL);
  if (journal < 0 || !zeros || pwrite(journal, zeros, JOURNAL, 0) != JOURNAL || fsync(journal)) { perror("setup"); return 1; }
  static char block[OBJECT];
  memset(block, 'x', sizeof block);
  double started = now_ms();
  int slow = 0;
  for (int i = 0; i < N; i++) {
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
  double total = now_ms() - started;
  qsort(samples, N, sizeof(double), by_value);
  printf("%d syncs%s in %.1f s: p50 %.3f p99 %.3f p99.9 %.3f max %.1f ms; %d over 10 ms\n", N,
         objects ? " (each after an object)" : "", total / 1000, samples[N / 2], samples[N * 99 / 100],
         samples[N * 999 / 1000], samples[N - 1], slow);
  unlink(path);
  return 0;
}
