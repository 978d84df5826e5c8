/* fl_unit runner: every registered case runs in its own forked child (as in
 * libuv's runner), so a crash or a failed assertion in one case is reported
 * and the rest still run.
 *
 *   fl_unit [SUBSTRING...]   run the cases whose name contains any SUBSTRING
 *
 * Prints "ok N name" / "not ok N name" per case and ends with
 * "N passed, N failed"; exits 1 if any case failed. Fixture paths are relative
 * to the repository root (ctest runs it there). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#define MAX_TESTS 1024
#define TEST_TIMEOUT_S 60

struct unit_case {
    const char *name;
    const char *file;
    fl_unit_fn fn;
    size_t seq; /* registration order */
};

static struct unit_case cases[MAX_TESTS];
static size_t n_cases;

void fl_unit_register(const char *name, const char *file, fl_unit_fn fn)
{
    if (n_cases == MAX_TESTS) {
        fprintf(stderr, "fl_unit: more than %d tests; raise MAX_TESTS\n", MAX_TESTS);
        exit(2);
    }
    cases[n_cases] = (struct unit_case){name, file, fn, n_cases};
    n_cases++;
}

/* Constructors run in link order, which is not alphabetical: sort by file,
 * then keep each file's cases in the order they were written. */
static int by_file(const void *a, const void *b)
{
    const struct unit_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

/* Returns 0 if the case passed, else 1, after printing why. */
static int run_case(const struct unit_case *c)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fl_unit: fork");
        return 1;
    }
    if (pid == 0) {
        alarm(TEST_TIMEOUT_S);
        c->fn();
        fflush(NULL);
        exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            perror("fl_unit: waitpid");
            return 1;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFSIGNALED(st))
        fprintf(stderr, "# %s: killed by signal %d (%s)%s\n", c->name, WTERMSIG(st),
                strsignal(WTERMSIG(st)),
                WTERMSIG(st) == SIGALRM ? "; the case ran longer than the timeout" : "");
    else
        fprintf(stderr, "# %s: exit status %d\n", c->name, WEXITSTATUS(st));
    return 1;
}

int main(int argc, char **argv)
{
    unsigned passed = 0, failed = 0, n = 0;

    qsort(cases, n_cases, sizeof(cases[0]), by_file);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n_cases; i++) {
        if (!selected(cases[i].name, argc, argv))
            continue;
        n++;
        if (run_case(&cases[i]) == 0) {
            passed++;
            printf("ok %u %s\n", n, cases[i].name);
        } else {
            failed++;
            printf("not ok %u %s\n", n, cases[i].name);
        }
    }
    printf("%u passed, %u failed\n", passed, failed);
    return failed || n == 0 ? 1 : 0;
}
