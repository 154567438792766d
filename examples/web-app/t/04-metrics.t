# GET /metrics: Prometheus' text format, counted over every worker of a real server.
use strict;
use warnings;
use Test::More;
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use File::Temp qw(tempdir);
use lib "$FindBin::Bin/../lib";
use WebApp;

my $root = "$FindBin::Bin/..";

subtest 'metrics_text renders counts, start time and revision' => sub {
    my $app = WebApp->new(app_dir => tempdir(CLEANUP => 1), started => 1700000000.5,
                          counts => sub { { "/\t200" => 3, "other\t404" => 1 } });
    my ($status, $headers, $body) = $app->route(GET => '/metrics');
    is $status, 200, 'status 200';
    my %h = @$headers;
    like $h{'Content-Type'}, qr{^text/plain; version=0\.0\.4}, 'Prometheus text format 0.0.4';
    like $body, qr{^# TYPE webapp_requests_total counter$}m, 'counter TYPE line';
    like $body, qr{^webapp_requests_total\{path="/",status="200"\} 3$}m, 'count of / 200';
    like $body, qr{^webapp_requests_total\{path="other",status="404"\} 1$}m, 'count of other 404';
    like $body, qr{^process_start_time_seconds 1700000000\.500$}m, 'start time';
    like $body, qr{^webapp_info\{revision="unknown"\} 1$}m, 'revision';
};

subtest 'path labels are routes or "other"' => sub {
    is WebApp::path_label('/'), '/', '/';
    is WebApp::path_label('/health?x=1'), '/health', 'query dropped';
    is WebApp::path_label('/metrics'), '/metrics', '/metrics';
    is WebApp::path_label('/wp-admin/x'), 'other', 'anything else';
};

subtest 'fail_path answers 500 under its prefix only' => sub {
    my $app = WebApp->new(app_dir => tempdir(CLEANUP => 1), fail_path => '/fail');
    is(($app->route(GET => '/fail/x'))[0], 500, '/fail/x is 500');
    is(($app->route(GET => '/'))[0], 200, '/ still 200');
    is(($app->route(GET => '/health'))[0], 200, '/health still 200');
};

subtest 'a real server counts requests over all its workers' => sub {
    my $sock = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "no free port: $@";
    my $port = $sock->sockport;
    close $sock;
    my $dir = tempdir(CLEANUP => 1);
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        @ENV{qw(WEB_APP_PORT WEB_APP_WORKERS WEB_APP_METRICS_DIR)} = ($port, 3, $dir);
        open STDOUT, '>', '/dev/null';
        exec $^X, "$root/bin/app.pl" or die "exec: $!";
    }
    my $deadline = time + 10;
    sleep 0.05 until IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) || time > $deadline;
    my $http = HTTP::Tiny->new(timeout => 10);
    my $base = "http://127.0.0.1:$port";
    $http->get("$base/") for 1 .. 7;        # new connection each: the workers share them out
    $http->get("$base/nope") for 1 .. 2;
    my $res = $http->get("$base/metrics");
    is $res->{status}, 200, 'GET /metrics is 200';
    like $res->{content}, qr{^webapp_requests_total\{path="/",status="200"\} 7$}m, '7 requests to / counted';
    like $res->{content}, qr{^webapp_requests_total\{path="other",status="404"\} 2$}m, '2 404s counted';
    my $start = $res->{content} =~ /^process_start_time_seconds (\S+)$/m ? $1 : 0;
    cmp_ok abs(time - $start), '<', 60, 'process start time is recent';
    kill 'TERM', $pid;
    waitpid $pid, 0;
};

done_testing;
