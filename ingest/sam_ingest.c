/*-------------------------------------------------------------------------
 *
 * sam_ingest.c
 *	  Entry point of sam_ingest: configuration (environment, then flags),
 *	  the libmicrohttpd daemon, logging and the graceful shutdown.
 *
 * Usage: see usage() below or README.md.  Secrets come from the
 * environment or from files, never from argv, and are never printed.
 * On start exactly one line goes to stdout:
 *
 *	  sam_ingest listening on HOST:PORT
 *
 * Everything else (access log, errors) goes to stderr.  SIGTERM or SIGINT
 * stops accepting connections, lets the requests in flight finish (up to
 * SHUTDOWN_GRACE_MS; a second signal cuts that short, see shut_down),
 * closes the connections and exits 0.
 *
 * Threads: libmicrohttpd's internal pool of --threads HTTP threads (epoll)
 * and --threads database workers (pool.c), each with its own libpq
 * connection (db.c).  The main thread only waits for signals.
 *
 * ingest/sam_ingest.c
 *
 *-------------------------------------------------------------------------
 */
#include "sam_ingest.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHUTDOWN_GRACE_MS	10000
#define MAX_SECRET_BYTES	4096
#define MAX_MAX_BODY		(64 * 1024 * 1024)
#define MAX_THREADS			256

IngestConfig ingest_config;
volatile int ingest_shutting_down = 0;
int			ingest_in_flight = 0;

static const char usage_text[] =
"sam_ingest: receives Unipile webhooks and cron calls and hands each to one\n"
"SQL function of the sam_ext extension.\n"
"\n"
"Usage: sam_ingest [OPTION]...\n"
"\n"
"Each option can also be given by the environment variable shown; the\n"
"option wins.  Secrets are read from the environment or from a file, never\n"
"from the command line.\n"
"\n"
"  --database-url URL        libpq conninfo or URI (required)     SAM_INGEST_DATABASE_URL\n"
"  --listen HOST             address to bind [127.0.0.1]          SAM_INGEST_LISTEN\n"
"  --port N                  TCP port, 0 = any free one [8080]    SAM_INGEST_PORT\n"
"  --webhook-secret-file F   file holding the webhook secret      SAM_WEBHOOK_SECRET (the secret)\n"
"  --webhook-header NAME     header carrying it [Unipile-Auth]    SAM_WEBHOOK_HEADER\n"
"  --cron-secret-file F      file holding the x-cron-secret       SAM_CRON_SECRET (the secret)\n"
"  --metrics-secret-file F   file holding the bearer token\n"
"                            /metrics asks for                    SAM_METRICS_SECRET (the secret)\n"
"  --max-body BYTES          largest request body [1048576]       SAM_INGEST_MAX_BODY\n"
"  --threads N               HTTP threads, and database workers\n"
"                            with one connection each [4]         SAM_INGEST_THREADS\n"
"  --batch N                 most webhooks queued together that a\n"
"                            worker stores in one transaction [16] SAM_INGEST_BATCH\n"
"  --max-connections N       open connections at most [1000]      SAM_INGEST_MAX_CONNECTIONS\n"
"  --per-ip-connections N    of them from one address, 0 = no\n"
"                            limit (behind a proxy: its own) [64] SAM_INGEST_PER_IP_CONNECTIONS\n"
"  --idle-timeout S          seconds a connection may stay silent\n"
"                            [15]                                 SAM_INGEST_IDLE_TIMEOUT\n"
"  --metrics-max-age S       seconds GET /metrics reuses the\n"
"                            database's figures, 0 = never [10]   SAM_INGEST_METRICS_MAX_AGE\n"
"  --help, --version\n"
"\n"
"Without a webhook secret every webhook is answered 401; without a cron\n"
"secret every cron endpoint is.  With a metrics secret, /metrics and\n"
"/metrics/ingest answer 401 without \"Authorization: Bearer <secret>\";\n"
"without one they, like /healthz, need none: keep the daemon on loopback\n"
"behind a proxy that exposes only /api/.\n";

/*
 * ingest_log writes one line "TIME sam_ingest: MESSAGE" to stderr with a
 * single write(), so lines of concurrent threads do not interleave.
 */
void
ingest_log(const char *fmt,...)
{
	char		line[1024];
	char		stamp[32];
	struct timespec ts;
	struct tm	tm;
	va_list		ap;
	int			n,
				m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ sam_ingest: ", stamp,
				 ts.tv_nsec / 1000000);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t) n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t) n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* messages from libpq and libmicrohttpd may end in newlines already */
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t) n) < 0)
	{
		/* nothing sensible to do */
	}
}

int64_t
monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * mhd_logger hands libmicrohttpd's own error messages to ingest_log.
 */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char		msg[512];

	(void) cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	ingest_log("libmicrohttpd: %s", msg);
}

/* die_usage reports a configuration error and exits 2. */
static void
die_usage(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));

static void
die_usage(const char *fmt,...)
{
	va_list		ap;

	fputs("sam_ingest: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'sam_ingest --help'.\n", stderr);
	exit(2);
}

/*
 * parse_number parses a whole decimal number within [min, max]; what
 * names the setting in the error message.
 */
static unsigned long long
parse_number(const char *s, unsigned long long min, unsigned long long max,
			 const char *what)
{
	char	   *end;
	unsigned long long v;

	errno = 0;
	if (s[0] < '0' || s[0] > '9')
		die_usage("%s must be a number", what);
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		die_usage("%s must be a number from %llu to %llu", what, min, max);
	return v;
}

/*
 * trim_secret drops a secret's trailing newlines, spaces and tabs (echo and
 * editors add a newline; a header's value arrives without trailing blanks,
 * so a secret with them could never match) and returns its new length.
 */
static size_t
trim_secret(char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	s[n] = '\0';
	return n;
}

/*
 * read_secret_file reads a secret from a file, trimmed (trim_secret).
 * Errors name the file, never its contents.
 */
static char *
read_secret_file(const char *path, size_t *len)
{
	FILE	   *f;
	char	   *buf;
	size_t		n;
	struct stat st;

	f = fopen(path, "r");
	if (f == NULL)
		die_usage("could not open secret file \"%s\": %s", path, strerror(errno));
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
		fprintf(stderr, "sam_ingest: warning: secret file \"%s\" is readable by everyone\n",
				path);
	buf = malloc(MAX_SECRET_BYTES + 2);
	if (buf == NULL)
		die_usage("out of memory");
	n = fread(buf, 1, MAX_SECRET_BYTES + 1, f);
	fclose(f);
	if (n > MAX_SECRET_BYTES)
		die_usage("secret file \"%s\" is larger than %d bytes", path, MAX_SECRET_BYTES);
	n = trim_secret(buf, n);
	if (n == 0)
		die_usage("secret file \"%s\" is empty", path);
	if (strlen(buf) != n)
		die_usage("secret file \"%s\" contains a NUL byte", path);
	*len = n;
	return buf;
}

/*
 * secret_from_env copies a secret from the environment, trimmed
 * (trim_secret); an empty value counts as unset.
 */
static char *
secret_from_env(const char *name, size_t *len)
{
	const char *v = getenv(name);
	char	   *s;

	if (v == NULL || v[0] == '\0')
		return NULL;
	if (strlen(v) > MAX_SECRET_BYTES)
		die_usage("%s is longer than %d bytes", name, MAX_SECRET_BYTES);
	s = strdup(v);
	if (s == NULL)
		die_usage("out of memory");
	*len = trim_secret(s, strlen(s));
	if (*len == 0)
	{
		free(s);
		return NULL;
	}
	return s;
}

/* pick returns the flag's value if given, else the variable's, else dflt. */
static const char *
pick(const char *flag, const char *env, const char *dflt)
{
	const char *v;

	if (flag != NULL)
		return flag;
	v = getenv(env);
	if (v != NULL && v[0] != '\0')
		return v;
	return dflt;
}

/*
 * valid_header_name tells whether s is an HTTP token (RFC 9110), so that
 * a typo in --webhook-header cannot silently never match.
 */
static bool
valid_header_name(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			  (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s)))
			return false;
	return true;
}

/* xstrdup is strdup that exits on out-of-memory. */
static char *
xstrdup(const char *s)
{
	char	   *p = strdup(s);

	if (p == NULL)
		die_usage("out of memory");
	return p;
}

/*
 * long_option finds the option a "--name" or "--name=value" argument names
 * by its full name (NULL when none); *len is the length of "--name".
 */
static const struct option *
long_option(const struct option *options, const char *arg, size_t *len)
{
	const struct option *o;

	*len = strcspn(arg, "=");
	for (o = options; o->name != NULL; o++)
		if (strlen(o->name) == *len - 2 && strncmp(o->name, arg + 2, *len - 2) == 0)
			return o;
	return NULL;
}

/*
 * parse_config fills ingest_config from the flags, then the environment,
 * then the defaults.  getopt's own messages are turned off: they would
 * echo a mistyped "--webhook-secret=..." to stderr.
 */
static void
parse_config(int argc, char **argv)
{
	static const struct option options[] = {
		{"database-url", required_argument, NULL, 'd'},
		{"listen", required_argument, NULL, 'l'},
		{"port", required_argument, NULL, 'p'},
		{"webhook-secret-file", required_argument, NULL, 'w'},
		{"webhook-header", required_argument, NULL, 'H'},
		{"cron-secret-file", required_argument, NULL, 'c'},
		{"metrics-secret-file", required_argument, NULL, 'S'},
		{"max-body", required_argument, NULL, 'm'},
		{"threads", required_argument, NULL, 't'},
		{"batch", required_argument, NULL, 'b'},
		{"max-connections", required_argument, NULL, 'C'},
		{"per-ip-connections", required_argument, NULL, 'I'},
		{"idle-timeout", required_argument, NULL, 'T'},
		{"metrics-max-age", required_argument, NULL, 'M'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	const char *f_url = NULL,
			   *f_listen = NULL,
			   *f_port = NULL,
			   *f_wfile = NULL,
			   *f_header = NULL,
			   *f_cfile = NULL,
			   *f_sfile = NULL,
			   *f_max = NULL,
			   *f_threads = NULL,
			   *f_batch = NULL,
			   *f_maxconn = NULL,
			   *f_perip = NULL,
			   *f_idle = NULL,
			   *f_mage = NULL;
	const char *v;
	char	   *errmsg = NULL;
	PQconninfoOption *opts;
	int			c;

	/*
	 * getopt_long takes any unambiguous prefix of an option, so that
	 * "--webhook-secret=VALUE" would be read as --webhook-secret-file and
	 * the value end up in an error message.  Only full names are taken.
	 */
	for (c = 1; c < argc && strcmp(argv[c], "--") != 0; c++)
	{
		const struct option *o;
		size_t		len;

		if (strncmp(argv[c], "--", 2) != 0)
			continue;
		o = long_option(options, argv[c], &len);
		if (o == NULL)
			die_usage("unknown option: %.*s", (int) len, argv[c]);
		if (o->has_arg == required_argument && argv[c][len] == '\0')
			c++;				/* its value is the next argument */
	}

	opterr = 0;
	while ((c = getopt_long(argc, argv, "hV", options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				f_url = optarg;
				break;
			case 'l':
				f_listen = optarg;
				break;
			case 'p':
				f_port = optarg;
				break;
			case 'w':
				f_wfile = optarg;
				break;
			case 'H':
				f_header = optarg;
				break;
			case 'c':
				f_cfile = optarg;
				break;
			case 'S':
				f_sfile = optarg;
				break;
			case 'm':
				f_max = optarg;
				break;
			case 't':
				f_threads = optarg;
				break;
			case 'b':
				f_batch = optarg;
				break;
			case 'C':
				f_maxconn = optarg;
				break;
			case 'I':
				f_perip = optarg;
				break;
			case 'T':
				f_idle = optarg;
				break;
			case 'M':
				f_mage = optarg;
				break;
			case 'h':
				fputs(usage_text, stdout);
				exit(0);
			case 'V':
				printf("sam_ingest %s\n", SAM_INGEST_VERSION);
				exit(0);
			default:
				{
					/*
					 * Name the option, never its value.  The previous argument
					 * is the culprit only when it is the long option whose
					 * value is missing: inside a cluster of short options
					 * ("-zX"), getopt has not moved past it yet, and
					 * argv[optind - 1] is whatever came before.
					 */
					const char *arg = argv[optind - 1];
					size_t		len = 0;
					const struct option *o = strncmp(arg, "--", 2) == 0 ?
						long_option(options, arg, &len) : NULL;

					if (o != NULL && (optopt == 0 || optopt == o->val))
						die_usage("unknown option or missing value: %.*s", (int) len, arg);
					die_usage("unknown option: -%c", optopt ? optopt : '?');
				}
		}
	}
	if (optind < argc)
		die_usage("unexpected argument (%d extra)", argc - optind);

	v = pick(f_url, "SAM_INGEST_DATABASE_URL", NULL);
	if (v == NULL)
		die_usage("a database is required: --database-url or SAM_INGEST_DATABASE_URL");
	/* the message could quote the URL, password included: not shown */
	opts = PQconninfoParse(v, &errmsg);
	if (opts == NULL)
		die_usage("the database URL is not a valid libpq conninfo string or URI");
	PQconninfoFree(opts);
	PQfreemem(errmsg);
	ingest_config.database_url = xstrdup(v);

	ingest_config.listen = xstrdup(pick(f_listen, "SAM_INGEST_LISTEN", "127.0.0.1"));
	ingest_config.port = (unsigned) parse_number(pick(f_port, "SAM_INGEST_PORT", "8080"),
												 0, 65535, "the port");
	ingest_config.max_body = (size_t) parse_number(pick(f_max, "SAM_INGEST_MAX_BODY", "1048576"),
												   1, MAX_MAX_BODY, "the body limit");
	ingest_config.threads = (unsigned) parse_number(pick(f_threads, "SAM_INGEST_THREADS", "4"),
													1, MAX_THREADS, "the thread count");
	ingest_config.batch = (unsigned) parse_number(pick(f_batch, "SAM_INGEST_BATCH", "16"),
												  1, MAX_BATCH, "the batch size");
	ingest_config.max_connections = (unsigned) parse_number(pick(f_maxconn, "SAM_INGEST_MAX_CONNECTIONS", "1000"),
															1, 100000, "the connection limit");
	ingest_config.per_ip_connections = (unsigned) parse_number(pick(f_perip, "SAM_INGEST_PER_IP_CONNECTIONS", "64"),
															   0, 100000, "the per-address connection limit");
	ingest_config.idle_timeout = (unsigned) parse_number(pick(f_idle, "SAM_INGEST_IDLE_TIMEOUT", "15"),
														 1, 3600, "the idle timeout");
	ingest_config.metrics_max_age = (unsigned) parse_number(pick(f_mage, "SAM_INGEST_METRICS_MAX_AGE", "10"),
															0, 3600, "the metrics' maximum age");
	ingest_config.webhook_header = xstrdup(pick(f_header, "SAM_WEBHOOK_HEADER", "Unipile-Auth"));
	if (!valid_header_name(ingest_config.webhook_header))
		die_usage("the webhook header must be an HTTP header name");

	if (f_wfile != NULL)
		ingest_config.webhook_secret = read_secret_file(f_wfile, &ingest_config.webhook_secret_len);
	else
		ingest_config.webhook_secret = secret_from_env("SAM_WEBHOOK_SECRET",
													   &ingest_config.webhook_secret_len);
	if (f_cfile != NULL)
		ingest_config.cron_secret = read_secret_file(f_cfile, &ingest_config.cron_secret_len);
	else
		ingest_config.cron_secret = secret_from_env("SAM_CRON_SECRET",
													&ingest_config.cron_secret_len);
	if (f_sfile != NULL)
		ingest_config.metrics_secret = read_secret_file(f_sfile, &ingest_config.metrics_secret_len);
	else
		ingest_config.metrics_secret = secret_from_env("SAM_METRICS_SECRET",
													   &ingest_config.metrics_secret_len);
}

/*
 * free_config releases the configuration, wiping the secrets first.
 */
static void
free_config(void)
{
	if (ingest_config.webhook_secret)
		explicit_bzero(ingest_config.webhook_secret, ingest_config.webhook_secret_len);
	if (ingest_config.cron_secret)
		explicit_bzero(ingest_config.cron_secret, ingest_config.cron_secret_len);
	if (ingest_config.metrics_secret)
		explicit_bzero(ingest_config.metrics_secret, ingest_config.metrics_secret_len);
	free(ingest_config.webhook_secret);
	free(ingest_config.cron_secret);
	free(ingest_config.metrics_secret);
	free(ingest_config.database_url);
	free(ingest_config.listen);
	free(ingest_config.webhook_header);
	memset(&ingest_config, 0, sizeof(ingest_config));
}

/*
 * resolve_listen turns --listen and --port into a socket address (numeric
 * addresses or a name such as "localhost"; the first answer is used).
 */
static void
resolve_listen(struct sockaddr_storage *addr, bool *ipv6)
{
	struct addrinfo hints;
	struct addrinfo *ai = NULL;
	char		port[8];
	int			rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", ingest_config.port);
	rc = getaddrinfo(ingest_config.listen, port, &hints, &ai);
	if (rc != 0 || ai == NULL)
		die_usage("cannot listen on \"%s\": %s", ingest_config.listen, gai_strerror(rc));
	memset(addr, 0, sizeof(*addr));
	memcpy(addr, ai->ai_addr, ai->ai_addrlen);
	*ipv6 = (ai->ai_family == AF_INET6);
	freeaddrinfo(ai);
}

/*
 * wait_in_flight waits until no request is in flight, for at most ms
 * milliseconds; a stop signal ends the wait early.  True if none is left.
 */
static bool
wait_in_flight(const sigset_t *signals, int ms)
{
	int64_t		deadline = monotonic_ns() + (int64_t) ms * 1000000;
	struct timespec tick = {0, 20 * 1000000};

	while (__atomic_load_n(&ingest_in_flight, __ATOMIC_RELAXED) > 0)
	{
		if (monotonic_ns() > deadline)
			return false;
		if (signals != NULL && sigtimedwait(signals, NULL, &tick) > 0)
			return false;
		if (signals == NULL)
			nanosleep(&tick, NULL);
	}
	return true;
}

/*
 * shut_down stops accepting connections and waits for the requests in
 * flight.  If they are not done within the grace period (or a second
 * signal comes), the queued ones are answered 503 and the SQL calls in
 * progress are cancelled.  Then the database workers end (closing their
 * connections) and the daemon stops, closing the client connections.
 */
static void
shut_down(struct MHD_Daemon *daemon, const sigset_t *signals)
{
	MHD_socket	listen_fd;

	__atomic_store_n(&ingest_shutting_down, 1, __ATOMIC_RELAXED);
	listen_fd = MHD_quiesce_daemon(daemon);
	if (!wait_in_flight(signals, SHUTDOWN_GRACE_MS))
	{
		ingest_log("not waiting any longer: answering %d request(s) in flight with 503",
				   __atomic_load_n(&ingest_in_flight, __ATOMIC_RELAXED));
		pool_abort();
		wait_in_flight(NULL, 2000);
	}
	pool_stop();
	MHD_stop_daemon(daemon);
	if (listen_fd != MHD_INVALID_SOCKET)
		close(listen_fd);
}

int
main(int argc, char **argv)
{
	struct sockaddr_storage addr;
	bool		ipv6;
	sigset_t	signals;
	unsigned int flags;
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	int			sig = 0;

	parse_config(argc, argv);
	resolve_listen(&addr, &ipv6);
	metrics_init();
	db_init(ingest_config.database_url);

	/* block the stop signals in every thread; main waits for them */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	pool_start(ingest_config.threads, ingest_config.batch, run_jobs);

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
		flags |= MHD_USE_EPOLL;
	else
		flags |= MHD_USE_POLL;
	if (ipv6)
		flags |= MHD_USE_IPv6;

	daemon = MHD_start_daemon(flags, (uint16_t) ingest_config.port, NULL, NULL,
							  handle_request, NULL,
							  MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
							  MHD_OPTION_THREAD_POOL_SIZE, ingest_config.threads,
							  MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							  /*
							   * Connections that send nothing (or a byte now and then)
							   * must not take every place: at most so many in all, and
							   * from one address, and each dropped after a silence.
							   */
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) ingest_config.idle_timeout,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) ingest_config.max_connections,
							  MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) ingest_config.per_ip_connections,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		ingest_log("could not listen on %s port %u", ingest_config.listen,
				   ingest_config.port);
		pool_stop();
		free_config();
		return 1;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);

	ingest_log("sam_ingest %s: %u threads, webhooks in batches of up to %u, "
			   "%s, body limit %zu bytes, connections at most %u (%u an address, 0: no limit; "
			   "closed after %u s of silence), webhook secret %s (header %s), cron secret %s, "
			   "metrics secret %s",
			   SAM_INGEST_VERSION, ingest_config.threads, ingest_config.batch,
			   (flags & MHD_USE_EPOLL) ? "epoll" : "poll", ingest_config.max_body,
			   ingest_config.max_connections, ingest_config.per_ip_connections,
			   ingest_config.idle_timeout,
			   ingest_config.webhook_secret ? "set" : "NOT SET: every webhook gets 401",
			   ingest_config.webhook_header,
			   ingest_config.cron_secret ? "set" : "NOT SET: every cron call gets 401",
			   ingest_config.metrics_secret ? "set" : "not set: /metrics needs none");
	printf(strchr(ingest_config.listen, ':') ? "sam_ingest listening on [%s]:%u\n"
		   : "sam_ingest listening on %s:%u\n",
		   ingest_config.listen,
		   info ? (unsigned) info->port : ingest_config.port);
	fflush(stdout);

	while (sig != SIGTERM && sig != SIGINT)
	{
		if (sigwait(&signals, &sig) != 0)
			sig = 0;
	}
	ingest_log("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	shut_down(daemon, &signals);
	ingest_log("stopped");
	free_config();
	return 0;
}
