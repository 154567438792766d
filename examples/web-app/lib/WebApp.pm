package WebApp;

# Application logic of the bgci sample web app, kept free of any socket code
# so that t/01-routes.t can unit-test it.
#
#   my $app = WebApp->new(app_dir => '/app');
#   my ($status, $headers, $body) = $app->route('GET', '/health');
#
# $headers is an array ref of (name => value) pairs; Content-Length and
# Connection are added by the server (see bin/app.pl).
#
# Options of new():
#   counts     => sub { \%counts }   what GET /metrics reports: "path\tstatus" => n,
#                                    summed over the server's workers (see bin/app.pl)
#   started    => unix time         the server's start, for process_start_time_seconds
#   fail_path  => '/prefix'         answer 500 to every path under it: a planted fault, for
#                                    testing an analysis gate (WEB_APP_FAIL_PATH)

use strict;
use warnings;

our $VERSION = '1.00';

my %REASON = (
    200 => 'OK',
    400 => 'Bad Request',
    404 => 'Not Found',
    408 => 'Request Timeout',
    500 => 'Internal Server Error',
);

sub new {
    my ($class, %args) = @_;
    my $self = bless {
        app_dir   => $args{app_dir},
        counts    => $args{counts} || sub { {} },
        started   => $args{started} // $^T,
        fail_path => $args{fail_path},
    }, $class;
    $self->{app_dir} = '.' unless defined $self->{app_dir};
    return $self;
}

sub app_dir { $_[0]{app_dir} }

# The git sha of the running build: first line of "$app_dir/REVISION"
# (written by bgci into the build context), or "unknown".
sub revision {
    my ($self) = @_;
    my $file = "$self->{app_dir}/REVISION";
    open my $fh, '<', $file or return 'unknown';
    my $line = <$fh>;
    close $fh;
    return 'unknown' unless defined $line;
    $line =~ s/^\s+//;
    $line =~ s/\s+\z//;
    return length $line ? $line : 'unknown';
}

sub reason { $REASON{ $_[-1] } || 'Unknown' }

sub text {
    my ($status, $body) = @_;
    return ($status, [ 'Content-Type' => 'text/plain; charset=utf-8' ], $body);
}

# route(METHOD, TARGET) -> (status, \@headers, body)
# HEAD is routed like GET (the server drops the body).
sub route {
    my ($self, $method, $target) = @_;
    $method = '' unless defined $method;
    $target = '' unless defined $target;
    (my $path = $target) =~ s/[?#].*//s;

    my $fail = $self->{fail_path};
    if (defined $fail && length $fail && index($path, $fail) == 0) {
        return text(500, "planted failure (WEB_APP_FAIL_PATH=$fail)\n");
    }
    if ($method eq 'GET' || $method eq 'HEAD') {
        return text(200, $self->revision . "\n") if $path eq '/';
        return text(200, "ok\n")                 if $path eq '/health';
        return (200, [ 'Content-Type' => 'text/plain; version=0.0.4; charset=utf-8' ], $self->metrics_text)
            if $path eq '/metrics';
    }
    return text(404, "not found\n");
}

# The path label of a request: its route, or "other" (so that scanners cannot make new series).
sub path_label {
    my ($target) = @_;
    (my $path = $target // '') =~ s/[?#].*//s;
    return $path =~ m{\A/(?:health|metrics)?\z} ? $path : 'other';
}

sub _escape_label {
    my ($value) = @_;
    $value =~ s/(["\\])/\\$1/g;
    $value =~ s/\n/\\n/g;
    return $value;
}

# GET /metrics: Prometheus' text format (version 0.0.4).
sub metrics_text {
    my ($self) = @_;
    my $counts = $self->{counts}->() || {};
    my $out = "# HELP webapp_requests_total Requests answered, by path and status.\n"
            . "# TYPE webapp_requests_total counter\n";
    for my $key (sort keys %$counts) {
        my ($path, $status) = split /\t/, $key, 2;
        $out .= sprintf qq{webapp_requests_total{path="%s",status="%s"} %d\n},
            _escape_label($path), _escape_label($status // ''), $counts->{$key};
    }
    $out .= "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
          . "# TYPE process_start_time_seconds gauge\n"
          . sprintf("process_start_time_seconds %.3f\n", $self->{started})
          . "# HELP webapp_info The running build (1).\n"
          . "# TYPE webapp_info gauge\n"
          . sprintf(qq{webapp_info{revision="%s"} 1\n}, _escape_label($self->revision));
    return $out;
}

1;
