/*
 * The pod sandbox's first process: it holds the pod's namespaces open, reaps the zombies of a
 * pod that shares its process namespace, and exits on SIGINT or SIGTERM. Built statically
 * (`cc -static -O2 -o pause pause.c`) so that its image needs nothing else.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("pause: sigprocmask");
        return 1;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (sig == SIGCHLD) {
            while (waitpid(-1, NULL, WNOHANG) > 0) {
            }
            continue;
        }
        return 0;
    }
}
