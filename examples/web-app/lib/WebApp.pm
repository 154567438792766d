package WebApp;

# Application logic of the bgci sample web app, kept free of any socket code
# so that t/01-routes.t can unit-test it.
#
#   my $app = WebApp->new(app_dir => '/app');
#   my ($status, $headers, $body) = $app->route('GET', '/health');
#
# $headers is an array ref of (name => value) pairs; Content-Length and
# Connection are added by the server (see bin/app.pl).

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
    my $self = bless { app_dir => $args{app_dir} }, $class;
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

    if ($method eq 'GET' || $method eq 'HEAD') {
        return text(200, $self->revision . "\n") if $path eq '/';
        return text(200, "ok\n")                 if $path eq '/health';
    }
    return text(404, "not found\n");
}

1;
