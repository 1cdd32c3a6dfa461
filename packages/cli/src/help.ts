/** `locks --help`. */
export const MAIN_HELP = `locks: run a command under a lock shared by processes and machines

Usage:
  locks run [options] <key> -- <command> [args...]   run <command> while holding <key>
  locks status [options] <key>                       is <key> held, and by whom
  locks release --force [options] <key>              free <key> whoever holds it (admin)
  locks <run|status|release> --help                  options of a command
  locks --help | --version

Backends (--backend, or LOCKS_BACKEND in the environment):
  (none)                          lock files in $XDG_RUNTIME_DIR/locks or <tmpdir>/locks-<uid>:
                                  one machine, no server needed
  file:///var/lock/app            lock files in that directory (one machine)
  file:locks/app                  the same, relative to the working directory
  redis://[:password@]host:6379   one Redis server (rediss:// for TLS); give --backend
                                  several times (3 or 5 distinct servers) for Redlock
  etcd://host:2379[,host:2379]    an etcd cluster (etcds:// for TLS; user:password@ allowed)
  postgres://user:pw@host/db      PostgreSQL advisory locks
  mysql://user:pw@host:3306/db    MySQL or MariaDB named locks (GET_LOCK); also mariadb://

Examples:
  locks run nightly-backup -- ./backup.sh                 wait for the lock, then run
  locks run -n nightly-backup -- ./backup.sh              skip (exit 75) if it is held: flock -n
  locks run --timeout 5m deploy -- ./deploy.sh            give up after 5 minutes
  locks run -b redis://10.0.0.5:6379 migrate -- npm run migrate
  locks run -b etcd://10.0.0.5:2379 leader -- ./job       like etcdctl lock leader ./job
  locks run -n --min-hold 1m -b redis://10.0.0.5:6379 nightly -- ./job
                                                          cron on several hosts: one run per minute
  locks status -b redis://10.0.0.5:6379 migrate
  locks release --force -b redis://10.0.0.5:6379 migrate

Exit codes: the command's own, or 128+N when signal N ended it; 75 the key stayed held
(--conflict-exit-code); 70 the lock was lost while the command ran; 2 bad input or
unreachable server; 126/127 the command could not be run / was not found.
locks status: 0 free, 1 held. locks release --force: 0 freed, 1 it was not held.
`;

/** `locks run --help`. */
export const RUN_HELP = `Usage: locks run [options] <key> -- <command> [args...]

Waits for the lock on <key>, runs <command> with this terminal's stdin, stdout and
stderr, releases the lock when the command ends, and exits with the command's exit
code. The command gets LOCKS_KEY and LOCKS_FENCING_TOKEN (a number that grows with
every grant of the key) in its environment. The lock is stored with a label, shown by
locks status: --holder, or <host name>:<pid of locks>.

Options:
  -b, --backend <url>          where the lock lives (see locks --help); repeat it with
                               redis:// URLs for Redlock. Default: LOCKS_BACKEND, or a
                               per-user directory of lock files
      --namespace <name>       prefix of the key on the server (default: LOCKS_NAMESPACE,
                               or "default", the library's default)
  -t, --timeout <duration>     give up after waiting this long (default: wait forever;
                               0: try once, like flock -n)
  -n, --nonblock               same as --timeout 0
      --ttl <duration>         lease time (default 30s); locks extends the lease every
                               third of it while the command runs, so a crashed locks
                               frees the key after at most this long. PostgreSQL ignores it:
                               its locks end with the session
  -s, --shared                 shared (reader) lock: many shared holders, no exclusive one
      --limit <n>              semaphore: at most <n> holders at once (default 1)
      --holder <label>         the label stored with the lock and shown by locks status
                               (1 to 256 UTF-8 bytes; default <host name>:<pid of locks>)
      --min-hold <duration>    keep the key held until this long after the grant, even
                               when the command ends sooner, so that a quick cron job on
                               several hosts runs once (with -n); locks stays until then
                               (a signal ends the stay early)
  -E, --conflict-exit-code <n> exit code when the key stays held until --timeout (default 75)
      --kill-after <duration>  when the lock is lost while the command runs, the command
                               gets SIGTERM, then SIGKILL this much later (default 10s)
  -q, --quiet                  no message when the key is held (for cron)
  -v, --verbose                say on stderr when waiting starts, when the lock is taken
                               (with its fencing token) and when it is released
  -h, --help                   this help

A progress line shows on stderr while waiting for more than a second, when stderr
is a terminal (not with --quiet).

Durations: 500ms, 30s, 5m, 1h, 1d or 1m30s; a bare number is seconds (2.5 = 2500ms).

Signals: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to locks are passed on
to the command; the lock is released when the command exits. A signal while waiting stops
the wait (exit 128+N), the command never runs. SIGUSR1 never opens Node's inspector.

Exit codes:
  the command's    its own exit code, or 128+N when signal N ended it (as shells do)
  75               the key stayed held until --timeout (change with --conflict-exit-code)
  70               the lock was lost while the command ran (TTL passed without extension,
                   server lost the lock): the command got SIGTERM (SIGKILL after
                   --kill-after) and its work may have overlapped another holder's
  2                bad input (options, backend URL, duration, missing --) or the
                   server could not be reached
  126, 127         the command could not be executed / was not found
  128+N            a signal N stopped locks while it waited

Examples:
  locks run -n backup -- ./backup.sh                      cron: skip when the last run is busy
  locks run --timeout 30s --ttl 1m deploy -- ./deploy.sh
  locks run --limit 4 gpu -- python train.py              at most 4 at a time
  locks run -n --min-hold 1m -b redis://db:6379 nightly -- ./job
                                                          every host's cron: one run a minute
  locks run -b redis://a:6379 -b redis://b:6379 -b redis://c:6379 job -- ./job
  locks run -b postgres://app@db/app migrate -- npm run migrate
`;

/** `locks status --help`. */
export const STATUS_HELP = `Usage: locks status [options] <key>

Says whether <key> is held and by whom: one line per holder with its label (--holder
of locks run, or "-" when it gave none), mode, fencing token and when the store frees it
unless it is extended ("no TTL" on PostgreSQL and MySQL, whose locks end with the
session); a semaphore shows its holders and limit. Takes no lock.

  held: "nightly" (namespace "default", redis backend)
    holder web-1:4242, exclusive, fencing token 41, expires in 27.1s

Options:
  -b, --backend <url>      where the lock lives (see locks --help)
      --namespace <name>   prefix of the key on the server (default: LOCKS_NAMESPACE or "default")
      --json               one JSON object on stdout
  -q, --quiet              print nothing; only the exit code
  -h, --help               this help

Exit codes: 0 free, 1 held, 2 bad input or server unreachable.
`;

/** `locks release --help`. */
export const RELEASE_HELP = `Usage: locks release --force [options] <key>

Admin: frees <key> whoever holds it (every holder: exclusive, readers, semaphore slots).
Every later grant gets a higher fencing token, so an evicted holder is fenced: a resource
that refuses lower tokens refuses its writes. An evicted locks run notices at once where
the backend can tell, else at its next extension (a third of its --ttl): it stops its
command (SIGTERM, then SIGKILL) and exits 70.

There is no release without --force: locks run releases its key itself when its command
ends, and a locks process owns no other process's lock.

Options:
  -f, --force              required: free the key whoever holds it
  -b, --backend <url>      where the lock lives (see locks --help)
      --namespace <name>   prefix of the key on the server (default: LOCKS_NAMESPACE or "default")
  -q, --quiet              print nothing; only the exit code
  -h, --help               this help

Exit codes: 0 freed, 1 it was not held (nothing freed), 2 bad input (also without
--force) or server unreachable.
`;
